"""Parameter counts against the published architectures, and ``attnviz.load_model``."""

from __future__ import annotations

import os
import pickle
import time

import pytest
import timm
import torch
import torchvision
from helpers import randomize_bn

import attnviz
from attnviz.models import create_model, save_weights


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868,
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "cbam_resnet18": 11_779_392,
    "cbam_resnet34": 21_960_468,
    "cbam_resnet50": 28_089_624,
    "cbam_resnet101": 49_330_172,
    "eca_resnet50": 25_557_032 + 86,
    "resnest50": 27_483_240,
    "resnest101": 48_275_016,
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count(name):
    assert n_params(create_model(name)) == PARAMS[name]


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_plain_resnet_equals_torchvision(depth):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    ours = create_model(f"resnet{depth}")
    assert n_params(ours) == n_params(tv) == PARAMS[f"resnet{depth}"]
    # same tensors, same shapes, in the same order
    assert [p.shape for p in ours.parameters()] == [p.shape for p in tv.parameters()]


def test_resnest50_equals_timm_resnest50d():
    ours, ref = create_model("resnest50"), timm.create_model("resnest50d", pretrained=False)
    assert n_params(ours) == n_params(ref) == PARAMS["resnest50"]
    assert sorted(p.numel() for p in ours.parameters()) == sorted(
        p.numel() for p in ref.parameters()
    )


def test_num_classes_changes_only_the_head():
    full, small = create_model("se_resnet18"), create_model("se_resnet18", num_classes=10)
    assert n_params(full) - n_params(small) == 990 * 513
    assert small.fc.out_features == 10


def test_small_forward_shapes():
    for name in ("se_resnet18", "cbam_resnet18", "eca_resnet18", "resnest14"):
        model = create_model(name, num_classes=7).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


# -- load_model ------------------------------------------------------------------------------


def test_load_model_builder_eval_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = attnviz.load_model("se_resnet18", num_classes=10, device="auto")
    assert not model.training and not any(m.training for m in model.modules())
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.fc.out_features == 10
    assert attnviz.resolve_device("auto") == torch.device("cpu")


def test_load_model_unknown_name():
    with pytest.raises(attnviz.ModelError) as e:
        attnviz.load_model("no_such_model_xyz", device="cpu")
    assert "no_such_model_xyz" in str(e.value)


def test_load_model_pretrained_offline(offline):
    with pytest.raises(attnviz.ModelError) as e:
        attnviz.load_model("resnest14d", pretrained=True, device="cpu")
    msg = str(e.value)
    assert "could not fetch" in msg and "checkpoint=" in msg and "resnest14d" in msg


@pytest.fixture
def no_network(offline, monkeypatch, tmp_path):
    """The network is down for this process: every connection fails (and is listed in the
    returned list); HF_HUB_OFFLINE unset."""
    import socket

    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", os.fspath(tmp_path / "torch"))

    tried: list[object] = []

    def down(address, *args, **kwargs):
        tried.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", down)
    monkeypatch.setattr(socket, "getaddrinfo", down)
    return tried


@pytest.mark.parametrize("name", ["seresnet50", "ecaresnet50d"])
def test_pretrained_without_network_fails_fast_with_one_line(no_network, name):
    """Not the minute of retries huggingface_hub would take: the probe answers in seconds."""
    t0 = time.perf_counter()
    with pytest.raises(attnviz.ModelError) as e:
        attnviz.load_model(name, pretrained=True, device="cpu")
    elapsed = time.perf_counter() - t0
    msg = str(e.value)
    assert elapsed < 5, elapsed
    assert "\n" not in msg and "no network" in msg
    assert f"load_model({name!r}, checkpoint='path/to/weights.safetensors')" in msg


def test_pretrained_weights_in_the_cache_load_without_network(no_network):
    """Offline mode is used, not an error, when the hub's cache already has the weights."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    ref = timm.create_model("resnest14d")
    repo = timm.models.get_pretrained_cfg("resnest14d").hf_hub_id
    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(folder, "refs"))
    os.makedirs(os.path.join(folder, "snapshots", "0" * 40))
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write("0" * 40)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              os.path.join(folder, "snapshots", "0" * 40, "model.safetensors"))
    model = attnviz.load_model("resnest14d", pretrained=True, device="cpu")
    assert len(no_network) == 1  # the probe; the hub was not asked (no retries)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_load_model_attnviz_pretrained_refused():
    with pytest.raises(attnviz.ModelError, match="checkpoint="):
        attnviz.load_model("se_resnet18", pretrained=True, device="cpu")


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("resnest14d", ".safetensors"), ("seresnet18", ".safetensors"), ("seresnet18", ".pt")],
)
def test_timm_checkpoint_round_trip(tmp_path, name, suffix):
    src = timm.create_model(name, pretrained=False, num_classes=10)
    randomize_bn(src, 3)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_weights(src, path, metadata={"classes": [f"c{i}" for i in range(10)]})
    else:
        torch.save(src.state_dict(), path)
    model = attnviz.load_model(name, checkpoint=path, num_classes=10, device="cpu")
    assert not model.training
    ref, got = src.state_dict(), model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.eval()(x), atol=0, rtol=0)
    if suffix == ".safetensors":
        assert model.class_names == [f"c{i}" for i in range(10)]


def test_attnviz_checkpoint_round_trip(tmp_path):
    src = create_model("cbam_resnet18", num_classes=5)
    randomize_bn(src, 4)
    path = save_weights(src, tmp_path / "cbam.safetensors")
    model = attnviz.load_model("cbam_resnet18", checkpoint=path, num_classes=5, device="cpu")
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


class _Evil:
    """Unpickling this creates a directory: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickle_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = create_model("resnet18", num_classes=2).state_dict()
    state["payload"] = _Evil(str(marker))
    torch.save(state, path)
    with pytest.raises(attnviz.CheckpointError) as e:
        attnviz.load_model("resnet18", checkpoint=path, num_classes=2, device="cpu")
    assert not marker.exists()
    assert "weights_only" in str(e.value)
    # the payload is live: a plain unpickling does run it, so the check above can fail
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_plain_pickle_file_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": _Evil(str(marker))}, protocol=2))
    with pytest.raises(attnviz.CheckpointError):
        attnviz.load_model("resnet18", checkpoint=path, device="cpu")
    assert not marker.exists()


def test_wrong_architecture_lists_missing_and_unexpected(tmp_path):
    path = save_weights(create_model("cbam_resnet18"), tmp_path / "cbam.safetensors")
    with pytest.raises(attnviz.CheckpointError) as e:
        attnviz.load_model("se_resnet18", checkpoint=path, device="cpu")
    msg = str(e.value)
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "attn.fc1.weight" in msg and "attn.channel.mlp" in msg


def test_wrong_shape_is_reported(tmp_path):
    path = save_weights(create_model("resnet18", num_classes=3), tmp_path / "r.safetensors")
    with pytest.raises(attnviz.CheckpointError, match="fc.weight"):
        attnviz.load_model("resnet18", checkpoint=path, num_classes=4, device="cpu")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(attnviz.CheckpointError, match="does not exist"):
        attnviz.load_model("resnet18", checkpoint=tmp_path / "nope.safetensors", device="cpu")
