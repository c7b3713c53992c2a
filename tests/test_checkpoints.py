"""Checkpoints that would load garbage are refused with one CheckpointError line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import attnviz
from attnviz.models import read_state_dict, save_weights

ARCH = "demo_se_resnet"
FLOAT_KEY = "fc.weight"


def _state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in attnviz.create_model(ARCH).state_dict().items()}


def _save(state: dict, path: Path, metadata: dict[str, str] | None = None) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    else:
        torch.save(state, path)
    return path


def _refused(path: Path, *words: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on validating sparse tensors
        with pytest.raises(attnviz.CheckpointError) as info:
            attnviz.load_model(ARCH, checkpoint=path, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert repr(str(path)) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(s, d) for s in (".safetensors", ".pt")
     for d in (torch.int8, torch.uint8, torch.bool, torch.int64)] + [(".pt", torch.complex64)],
)
def test_non_floating_weights_are_refused(tmp_path: Path, suffix: str, dtype: torch.dtype) -> None:
    state = _state()
    w = state[FLOAT_KEY]
    state[FLOAT_KEY] = (w * 100).to(dtype) if dtype != torch.bool else w > 0
    name = str(dtype).removeprefix("torch.")
    _refused(_save(state, tmp_path / f"w{suffix}"), "wrong kind of number", f"{FLOAT_KEY}: {name}")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float) -> None:
    state = _state()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = bad
    _refused(_save(state, tmp_path / "w.safetensors"), "NaN or infinite",
             "layer1.0.conv1.weight")


def test_integer_buffers_still_load(tmp_path: Path) -> None:
    """BatchNorm's num_batches_tracked is int64 by design: not refused."""
    model = attnviz.create_model(ARCH)
    path = save_weights(model, tmp_path / "ok.safetensors", {"classes": ["a", "b"]})
    loaded = attnviz.load_model(ARCH, checkpoint=path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda s: {**{i: v for i, v in enumerate(s.values())}}, ("not parameter names", "0")),
        (lambda s: {**s, FLOAT_KEY: s[FLOAT_KEY].to_sparse()}, ("sparse", FLOAT_KEY)),
        (lambda s: {**s, FLOAT_KEY: torch.empty_like(s[FLOAT_KEY], device="meta")},
         ("meta", FLOAT_KEY)),
    ],
    ids=["integer keys", "sparse", "meta"],
)
def test_odd_pickled_state_dicts_are_refused(tmp_path: Path, make, words) -> None:
    path = _save(make(_state()), tmp_path / "w.pt")
    _refused(path, *words)
    with pytest.raises(attnviz.CheckpointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_state_dict(path)


@pytest.mark.parametrize("classes", ["not json [", "5", '{"a": 1}', "[1, 2]"])
def test_class_name_metadata_must_be_a_json_list_of_names(tmp_path: Path, classes: str) -> None:
    path = _save(_state(), tmp_path / "w.safetensors", {"classes": classes})
    _refused(path, "'classes' metadata is not a JSON list of names")


def test_class_names_are_read_from_metadata(tmp_path: Path) -> None:
    path = _save(_state(), tmp_path / "w.safetensors", {"classes": json.dumps(["x", "y"])})
    model = attnviz.load_model(ARCH, checkpoint=path, device="cpu")
    assert model.class_names == ["x", "y"]


def test_refused_pickle_message_has_no_terminal_codes(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    msg = _refused(path, "was refused", "weights_only=True")
    assert "[1m" not in msg and "[0m" not in msg
