"""One engine for every model: outputs that are not class logits go through report, stats,
evaluate and the explorer without a traceback; random weights are never silent; the same image
gives bit-identical weights in report, stats and the explorer; the preprocessing a model was
trained with travels with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_models import CASES, Detector, HFStyle
from report_helpers import write_shapes

import attnviz
from attnviz import cli
from attnviz.engine import forward, load_for_run, probe
from attnviz.errors import ParameterError
from attnviz.outputs import OutputSelector, call_model, interpret

MODELS = Path(__file__).with_name("engine_models.py")


def spec(name: str) -> str:
    return f"{MODELS}:{name}"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("imgs"), 3)


# -- what an output means ---------------------------------------------------------------------
def test_interpret_rules() -> None:
    x = torch.randn(2, 5)
    assert interpret(x, 2).kind == "classifier"
    assert interpret({"logits": x, "h": 1}, 2).source == "output['logits']"
    assert interpret((x, torch.zeros(2, 3, 4)), 2).source == "output[0]"
    assert interpret(torch.randn(2, 3, 8, 8), 2).kind == "dense"
    assert interpret(torch.randn(2, 8, 4), 2).kind == "none"
    assert interpret(torch.randn(3, 5), 2).kind == "none"  # not one row per image
    assert interpret({"boxes": x}, 2).kind == "none"
    assert interpret(torch.zeros(2, 5, dtype=torch.long), 2).kind == "none"
    out = interpret({"a": torch.randn(2, 3, 4, 4)}, 2, "a")
    assert out.kind == "dense" and out.source == "--output a"
    assert interpret((torch.zeros(2, 8), x), 2, 1).logits.equal(x)
    assert torch.equal(interpret(x, 2).logits, x)  # the network's numbers, unchanged


@pytest.mark.parametrize("selector, words", [
    ("nope", "does not fit"), ("5", "does not fit"), ("features", "not logits")])
def test_a_selector_that_does_not_fit_is_one_error(selector, words) -> None:
    out = {"features": torch.zeros(2, 8, 4)}
    with pytest.raises(ParameterError, match=words):
        interpret(out, 2, selector)


def test_dense_scores_are_class_shares() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, :] = 1  # top row class 2, bottom row class 0
    out = interpret(logits, 1)
    assert out.image_scores().tolist() == [[0.5, 0.0, 0.5]]
    assert out.top(["a", "b", "c"], 2)[0] == [("a", 0.5), ("c", 0.5)]


def test_pixel_values_models_are_called_by_keyword() -> None:
    net = HFStyle().eval()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(TypeError):
        net(pixel_values=None, x=x)  # there is no positional name but pixel_values
    out = call_model(net, x)
    assert torch.equal(out["logits"], net(pixel_values=x)["logits"])


def test_output_function_spec() -> None:
    sel = OutputSelector.parse(f"{MODELS}:seg_logits")
    net = Detector().eval()
    x = torch.rand(2, 3, 16, 16)
    out = forward(net, x, sel)
    assert out.kind == "classifier" and out.logits.shape == (2, 3)
    assert torch.equal(out.logits, net(x)[2].amax(1))


# -- every command on every kind of output ----------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_report_on_any_output(name, images, tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    code = cli.main(["report", str(images), "--model", spec(name), "--out", str(out),
                     "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    page = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    kind = CASES[name][1]
    assert summary["output"]["kind"] == kind
    assert {r["kind"] for r in summary["rows"]} >= {"channel", "spatial"}
    if kind == "none":
        assert "no class prediction" in page
        assert all(p["label"] == "no class prediction" for p in summary["predictions"])
    if kind == "dense":
        assert page.count('alt="predicted class map"') == 3
    else:
        assert "predicted class map" not in page


@pytest.mark.parametrize("name", list(CASES))
def test_stats_on_any_output(name, tmp_path, capsys) -> None:
    out = tmp_path / "st"
    code = cli.main(["stats", "shapes:6", "--model", spec(name), "--out", str(out),
                     "--batch-size", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    doc = json.loads((out / "stats.json").read_text())
    assert doc["model"]["output_kind"] == CASES[name][1]
    assert {layer["kind"] for layer in doc["layers"]} >= {"channel", "spatial"}
    assert doc["data"]["n_images"] == 6
    if CASES[name][1] == "none":
        assert doc["accuracy"]["top1"] is None
        assert doc["classes"]["grouping"] == "label"  # shapes have labels: grouped by them
    assert "no class prediction" in (out / "stats.html").read_text() or \
        CASES[name][1] != "none"


@pytest.mark.parametrize("name", ["segmenter", "detector", "hf_style"])
def test_evaluate_on_any_output(name, capsys) -> None:
    code = cli.main(["evaluate", "--model", spec(name), "--n", "10", "--size", "32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    first = out.splitlines()[0]
    assert ("no class prediction" in first) == (CASES[name][1] != "classifier")


@pytest.mark.parametrize("name", list(CASES))
def test_explorer_on_any_output(name, images) -> None:
    pytest.importorskip("ipywidgets")
    from attnviz.widgets import AttentionExplorer

    net = CASES[name][0]()
    ex = AttentionExplorer(net, sorted(images.glob("*.png")), static=False)
    text = ex.analysis().prediction_text()
    kind = CASES[name][1]
    assert text.startswith({"none": "no class prediction", "dense": "predicted map:",
                            "classifier": "prediction:"}[kind])
    assert ex.prediction.value.startswith(text.split(":")[0])


def test_bad_output_selector_is_one_line(images, tmp_path, capsys) -> None:
    code = cli.main(["report", str(images), "--model", spec("dict_plain"), "--output", "logits",
                     "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("attnviz: error: --output logits does not fit")
    assert not (tmp_path / "r" / "report.html").exists()


# -- random weights are never silent ----------------------------------------------------------
def test_random_weights_refused_then_bannered(images, tmp_path, capsys) -> None:
    args = ["--model", "se_resnet18", "--input-size", "32"]
    code = cli.main(["report", str(images), *args, "--out", str(tmp_path / "r")])
    assert code == 2 and "--random-weights" in capsys.readouterr().err
    code = cli.main(["stats", "shapes:4", *args, "--out", str(tmp_path / "s"), "--no-progress"])
    assert code == 2 and "--random-weights" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="random weights"):
        code = cli.main(["report", str(images), *args, "--random-weights", "--out",
                         str(tmp_path / "r")])
    assert code == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'id="random-weights"' in page
    assert page.index('id="random-weights"') < page.index("<h2>Per image</h2>")
    code = cli.main(["stats", "shapes:4", *args, "--random-weights", "--out",
                     str(tmp_path / "s"), "--no-progress"])
    assert code == 0
    assert "id='random-weights'" in (tmp_path / "s" / "stats.html").read_text()


def test_trained_models_have_no_banner(images, tmp_path) -> None:
    net, _ = load_for_run("demo-cbam", "cpu")
    assert not getattr(net, "attnviz_random_weights", False)
    assert cli.main(["report", str(images), "--model", "demo-cbam", "--out",
                     str(tmp_path / "r")]) == 0
    assert "random-weights" not in (tmp_path / "r" / "report.html").read_text()


def test_explorer_says_random_weights(images) -> None:
    pytest.importorskip("ipywidgets")
    from attnviz.widgets import AttentionExplorer

    net, _ = load_for_run("demo_cbam_resnet", "cpu", random_weights=True)
    ex = AttentionExplorer(net, sorted(images.glob("*.png"))[:1], static=False)
    assert "random weights" in ex.warning.value


# -- one data path ----------------------------------------------------------------------------
def test_same_image_same_weights_in_report_stats_and_explorer(tmp_path, monkeypatch) -> None:
    """A photo (enlarged to 900 px, over the explorer's display side, so the shown image is
    not the model's input) through all three paths: the recorded weights are equal bit for
    bit."""
    pytest.importorskip("ipywidgets")
    from attnviz.report import analyse
    from attnviz.stats import aggregate, dataset_stats
    from attnviz.widgets import AttentionExplorer

    photo = next(p for p in attnviz.sample_images("photos"))
    folder = tmp_path / "one"
    folder.mkdir()
    from PIL import Image

    Image.open(photo).convert("RGB").resize((900, 700)).save(folder / "big.png")
    net = attnviz.load_model("demo-cbam", device="cpu")

    rep = analyse([str(folder)], net=net, model="demo-cbam", progress=False)
    from_report = {r.key: r.value[0] for r in rep.records}

    seen: dict[str, torch.Tensor] = {}
    real = aggregate.Aggregate.update

    def spy(self, records, *a, **kw):
        seen.update({r.key: r.value[0].detach().clone() for r in records})
        return real(self, records, *a, **kw)

    monkeypatch.setattr(aggregate.Aggregate, "update", spy)
    dataset_stats([str(folder)], net, tmp_path / "st", progress=False)

    ex = AttentionExplorer(net, [folder / "big.png"], static=False)
    assert max(ex.store.load("big.png").shape[-2:]) < 900  # shown smaller than it is
    from_explorer = {r.key: r.value[0] for r in ex.analysis().records}

    assert set(from_report) == set(seen) == set(from_explorer)
    for key in from_report:
        assert torch.equal(from_report[key], seen[key]), key
        assert torch.equal(from_report[key], from_explorer[key]), key


# -- preprocessing travels with the model -----------------------------------------------------
def test_fit_attaches_preprocessing_and_checkpoint_restores_it(tmp_path) -> None:
    from attnviz.examples import tutorial_cbam_resnet
    from attnviz.models import input_spec, save_weights
    from attnviz.train import fit

    data = attnviz.datasets.make_shapes(32, seed=0, size=32)
    model = fit(tutorial_cbam_resnet(8, 1), data.images, data.labels, steps=2, batch_size=8,
                progress=False, classes=data.classes)
    spec = input_spec(model)
    assert (spec.size, spec.mean, spec.std) == (32, None, None)
    assert model.class_names == list(data.classes)
    x = attnviz.models.prepare(model, data.images[:2])
    assert torch.equal(x, data.images[:2])  # fed as trained: 32 px, no normalisation
    path = save_weights(model, tmp_path / "m.safetensors")
    mod = tmp_path / "m.py"
    mod.write_text("from attnviz.examples import tutorial_cbam_resnet\n"
                   "def build():\n    return tutorial_cbam_resnet(8, 1)\n")
    again = attnviz.load_model(f"{mod}:build", checkpoint=path, device="cpu")
    assert input_spec(again) == spec
    assert again.class_names == list(data.classes)
    override = attnviz.load_model(f"{mod}:build", checkpoint=path, device="cpu", input_size=48)
    assert input_spec(override).size == 48


def test_probe_reports_kind_and_classes() -> None:
    out = probe(CASES["segmenter"][0]())
    assert (out.kind, out.classes) == ("dense", 3)
    assert probe(CASES["detector"][0]()).classes is None


# -- attribution on any output ----------------------------------------------------------------
def test_attribution_targets_of_dense_and_detector_outputs() -> None:
    pytest.importorskip("captum")
    from attnviz import attribution

    seg = CASES["segmenter"][0]()
    x = torch.rand(2, 3, 16, 16)
    cam = attribution.gradcam(seg, x, "backbone.block", target=1)
    # by hand: Grad-CAM of class 1's logit summed over the pixels predicted as class 1
    feats: dict[str, torch.Tensor] = {}
    h = seg.backbone.block.register_forward_hook(lambda m, i, o: feats.update(a=o))
    logits = seg(x)
    h.remove()
    region = (logits.argmax(1) == 1).float()
    score = (logits[:, 1] * region).sum((1, 2))
    grads = torch.autograd.grad(score.sum(), feats["a"])[0]
    manual = torch.relu((grads.mean((2, 3), keepdim=True) * feats["a"]).sum(1))
    assert torch.allclose(cam, manual.detach(), atol=1e-5)

    det = Detector().eval()
    with pytest.raises(ParameterError, match="no class|pick its logits"):
        attribution.saliency(det, x)
    sal = attribution.saliency(det, x, output=f"{MODELS}:seg_logits", target=0)
    assert sal.shape == (2, 16, 16) and sal.abs().sum() > 0


# -- one publisher ----------------------------------------------------------------------------
def test_one_lock_for_report_and_stats(images, tmp_path, capsys) -> None:
    from attnviz.report.publish import Publication
    from attnviz.stats.publish import publisher

    out = tmp_path / "shared"
    with Publication(out):
        code = cli.main(["stats", "shapes:4", "--model", "demo-cbam", "--out", str(out),
                         "--no-progress"])
        err = capsys.readouterr().err
    assert code == 2 and "in use by another attnviz report (pid" in err
    assert not (out / "stats.json").exists()
    with publisher(out, resume=False):
        code = cli.main(["report", str(images), "--model", "demo-cbam", "--out", str(out)])
        err = capsys.readouterr().err
    assert code == 2 and "in use by another attnviz stats run (pid" in err
    assert cli.main(["stats", "shapes:4", "--model", "demo-cbam", "--out", str(out),
                     "--no-progress", "--per-image"]) == 0
    assert cli.main(["report", str(images), "--model", "demo-cbam", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([".attnviz", ".attnviz.lock", "per_image", "stats.html", "stats.json",
                            "report.html", "summary.csv", "summary.json"])
    assert all((out / n).exists() for n in names)  # each kind switches only its own links


@pytest.mark.parametrize("name", ["segmenter", "detector", "result_object"])
def test_python_api_on_any_output(name, images, tmp_path) -> None:
    from attnviz.report import write_report
    from attnviz.stats import dataset_stats, read_stats

    net = CASES[name][0]()
    page = write_report([str(images)], model=net, out_dir=tmp_path / "r", progress=False)
    assert page.is_file()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["output"]["kind"] == CASES[name][1]
    doc = read_stats(dataset_stats("shapes:4", net, tmp_path / "s", progress=False))
    assert doc["model"]["output_kind"] == CASES[name][1]
    assert {layer["kind"] for layer in doc["layers"]} >= {"channel", "spatial"}


def test_evaluate_on_one_image_is_no_traceback(capsys) -> None:
    """Class specificity needs two halves: with one image it is NaN, not a traceback."""
    assert cli.main(["evaluate", "--model", "demo-cbam", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "nan" in out and "accuracy" in out
