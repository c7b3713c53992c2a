"""Your own model: ``file.py:factory`` / ``package.module:attr``, its checkpoint and its
preprocessing, from Python and the command line (one-line errors, exit 2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import attnviz
from attnviz import cli
from attnviz.examples import tutorial_cbam_resnet
from attnviz.models import input_spec, save_weights

MODEL_PY = textwrap.dedent(
    """
    from attnviz.examples import tutorial_cbam_resnet

    def build(c=8, blocks=1):
        return tutorial_cbam_resnet(c, blocks)

    def broken():
        raise RuntimeError("no GPU here\\nsecond line")

    def not_a_model():
        return 42

    MODEL = tutorial_cbam_resnet(8, 1)
    """
)


@pytest.fixture
def model_py(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(MODEL_PY)
    return path


def _weights(tmp_path: Path, model: torch.nn.Module, name: str, wrap: str = "") -> Path:
    state = {wrap + k: v for k, v in model.state_dict().items()}
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_weights(model, path)
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)
    return path


def test_file_factory_with_args_checkpoint_and_preprocessing(model_py, tmp_path):
    trained = tutorial_cbam_resnet(8, 1)
    for p in trained.parameters():
        torch.nn.init.normal_(p)
    ckpt = _weights(tmp_path, trained, "best.pth", wrap="module.")
    labels = tmp_path / "labels.txt"
    labels.write_text("circle\nsquare\n\ntriangle\nstar\ncross\n")
    model = attnviz.load_model(f"{model_py}:build", checkpoint=ckpt, device="cpu",
                               model_args='{"c": 8}', input_size=32, mean=0.5,
                               std="0.2,0.3,0.4", labels=labels)
    for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    spec = input_spec(model)
    assert (spec.size, spec.mean, spec.std) == (32, (0.5,) * 3, (0.2, 0.3, 0.4))
    assert model.class_names == ["circle", "square", "triangle", "star", "cross"]
    x = attnviz.models.prepare(model, torch.rand(3, 50, 40))
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(x)
    assert list(rec.spatial) == ["layer1.0.sa"]


def test_module_attr_and_lightning_prefix(tmp_path):
    trained = tutorial_cbam_resnet(16, 2)
    ckpt = _weights(tmp_path, trained, "lightning.ckpt", wrap="model.")
    model = attnviz.load_model("attnviz.examples:tutorial_cbam_resnet", checkpoint=ckpt,
                               device="cpu")
    assert torch.equal(model.head.weight, trained.head.weight)
    assert input_spec(model).size == 224  # the stated default for your own models


def test_module_level_model_object(model_py):
    model = attnviz.load_model(f"{model_py}:MODEL", device="cpu")
    assert type(model).__name__ == "Net"


BAD = [
    ("{dir}/missing.py:build", [], ["model file", "missing.py", "does not exist"]),
    ("{py}:nope", [], ["has no attribute 'nope'"]),
    ("{py}:broken", [], ["raised RuntimeError: no GPU here"]),
    ("{py}:not_a_model", [], ["returned int, not a torch.nn.Module"]),
    ("no_such_pkg_xyz.mod:f", [], ["cannot import module 'no_such_pkg_xyz.mod'"]),
    ("{py}:build", ["--model-args", "{c: 8}"], ["--model-args is not valid JSON"]),
    ("{py}:build", ["--model-args", "[1]"], ["--model-args must be a JSON object"]),
    ("{py}:build", ["--checkpoint", "{wrong_keys}"], ["does not fit Net", "unexpected keys (9)"]),
    ("{py}:build", ["--checkpoint", "{wrong_shape}"], ["shape mismatches", "checkpoint (16"]),
    ("{py}:build", ["--mean", "a,b,c"], ["mean must be 1 or 3 numbers"]),
    ("{py}:build", ["--std", "0,1,1"], ["std must be positive"]),
    ("{py}:build", ["--labels", "{dir}/none.txt"], ["labels file", "does not exist"]),
    ("{py}:build", ["--input-size", "4"], ["input_size must be an integer >= 8"]),
    ("demo-cbam", ["--model-args", "{}"], ["model_args is for your own models"]),
]


@pytest.mark.parametrize(("model", "extra", "words"), BAD, ids=[f"{m} {e}" for m, e, _ in BAD])
def test_bad_user_models_give_one_line(model_py, tmp_path, capsys, model, extra, words):
    other = tutorial_cbam_resnet(8, 2)  # a second block: unexpected keys
    wide = tutorial_cbam_resnet(16, 1)  # same keys, other shapes
    subs = {"{py}": str(model_py), "{dir}": str(tmp_path),
            "{wrong_keys}": str(_weights(tmp_path, other, "keys.safetensors")),
            "{wrong_shape}": str(_weights(tmp_path, wide, "shape.safetensors"))}
    args = [model, *extra]
    for k, v in subs.items():
        args = [a.replace(k, v) for a in args]
    code = cli.main(["evaluate", "--n", "4", "--model", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def test_evaluate_runs_on_a_file_factory(model_py, capsys):
    code = cli.main(["evaluate", "--n", "10", "--size", "32", "--model", f"{model_py}:build",
                     "--input-size", "32", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "layer1.0.ca" in out and "layer1.0.sa" in out and "random init" in out


def test_report_on_your_own_model(model_py, tmp_path, capsys):
    """`attnviz report --model file.py:factory --checkpoint ...`: the report holds its layers."""
    import json

    images = tmp_path / "imgs"
    images.mkdir()
    for i, p in enumerate(attnviz.sample_images("shapes")[:2]):
        (images / f"s{i}.png").write_bytes(Path(p).read_bytes())
    trained = tutorial_cbam_resnet(8, 1)
    ckpt = _weights(tmp_path, trained, "best.pt", wrap="module.")
    labels = tmp_path / "labels.txt"
    labels.write_text("circle\nsquare\ntriangle\nstar\ncross\n")
    out = tmp_path / "out"
    code = cli.main(["report", str(images), "--model", f"{model_py}:build", "--checkpoint",
                     str(ckpt), "--input-size", "48", "--mean", "0.5", "--std", "0.25",
                     "--labels", str(labels), "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    text = (out / "summary.csv").read_text()
    assert "layer1.0.ca" in text and "layer1.0.sa" in text, text[:300]
    assert json.loads((out / "summary.json").read_text())
    html = (out / "report.html").read_text()
    assert "mynet.py:build" in html
    assert "48×48 px, normalisation mean 0.5, 0.5, 0.5; std 0.25, 0.25, 0.25" in html
    code = cli.main(["report", str(images), "--model", f"{model_py}:broken", "--out",
                     str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"attnviz: error: {model_py}:broken raised RuntimeError: "
                                 "no GPU here"]
