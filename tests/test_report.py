"""`attnviz report`: the batch analysis, the CLI (exit codes, messages), the HTML page and the
notebook. Models are the random-init ``demo_cbam_resnet`` unless a test needs trained weights."""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from report_helpers import figure_counts

import attnviz
from attnviz import cli, report
from attnviz.images import load_image
from attnviz.models.preprocess import prepare
from attnviz.report.params import ReportParameters

MODEL = "demo-cbam"  # trained weights (an architecture alone is refused without --random-weights)
BAD = {  # file name -> a word its reason must contain
    "empty.png": "empty",
    "notes.jpg": "not an image",
    "truncated.png": "truncated",
}
EXTERNAL = re.compile(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=[\"']?(?:https?:)?//", re.I)
MATHTEXT = "price $\\notacommand$.png"  # matplotlib would parse this as (broken) mathtext


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Two shapes images and one photo (when bundled), plus three files that cannot be read."""
    d = tmp_path_factory.mktemp("images")
    shapes = attnviz.sample_images("shapes")
    photos = attnviz.sample_images("photos")
    for p in shapes[:2] + photos[:1]:
        shutil.copy(p, d / p.name)
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    data = shapes[0].read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    return d


def good_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in BAD)


def test_batches_separate_bad_images(image_dir):
    source = report.open_images([str(image_dir)], 32)
    items = [b for b in report.batches(source, 32, 64, 0, False)]
    assert len(items) == 1
    b = items[0]
    assert [Path(n).name for n in b["name"]] == good_files(image_dir)
    assert b["image"].shape == (len(b["name"]), 3, 32, 32)
    assert {Path(n).name for n, _ in b["bad"]} == set(BAD)


def test_analyse_summaries_match_records(image_dir):
    model = attnviz.load_model(MODEL, device="cpu")
    run = report.analyse(
        [image_dir, str(image_dir / "nothing*.png")], model, batch_size=2, progress=False
    )
    assert [Path(p).name for p in run.paths] == good_files(image_dir)
    reasons = {Path(p).name: why for p, why in run.bad}
    for name, word in BAD.items():
        assert word in reasons[name], reasons
    assert reasons["nothing*.png"] == "matched no file"

    n = len(run.paths)
    assert len(run.records) == 16 and all(r.value.shape[0] == n for r in run.records)
    assert len(run.layers_found) == 16 and run.non_finite == []
    assert len(run.summaries) == n * len(run.records)
    # a row per image and layer: images in order, each with its layers in model order
    assert [(s["image"], s["layer"]) for s in run.summaries] == [
        (p, r.key) for p in run.paths for r in run.records]
    assert all(list(s) == list(report.SUMMARY_FIELDS) for s in run.summaries)
    rows = {(Path(s["image"]).name, s["layer"]): s for s in run.summaries}
    for i, path in enumerate(run.paths):
        # the batched records equal a plain one-image forward pass
        with torch.no_grad(), attnviz.record(model) as rec:
            logits = model(prepare(model, load_image(path)))
        torch.testing.assert_close(run.logits[i], logits[0], atol=1e-4, rtol=1e-4)
        assert run.predictions[i].index == int(logits.argmax())
        for r in rec.latest():
            torch.testing.assert_close(
                run.by_kind(r.kind)[r.key][i], r.value[0], atol=1e-5, rtol=1e-5
            )
            row = rows[(Path(path).name, r.key)]
            v = r.value[0]
            assert row["kind"] == r.kind
            assert row["mean"] == pytest.approx(float(v.mean()), abs=1e-5)
            assert row["min"] == pytest.approx(float(v.min()), abs=1e-5)
            assert row["max"] == pytest.approx(float(v.max()), abs=1e-5)
            assert row["std"] == pytest.approx(float(v.double().std(correction=0)), abs=1e-6)
            if r.kind == "spatial":
                h, w = v.shape
                y, x = divmod(int(v.argmax()), w)
                assert (row["peak_y"], row["peak_x"]) == ((y + 0.5) / h, (x + 0.5) / w)
                assert row["share_above_half"] == pytest.approx(float((v > 0.5).float().mean()))
            else:
                assert row["saturation"] == pytest.approx(
                    float(((v < 0.05) | (v > 0.95)).float().mean())
                )
                assert 0 <= row["entropy"] <= 1


def test_keep_bounds_what_is_held_but_not_the_summaries(image_dir):
    model = attnviz.load_model(MODEL, device="cpu")
    full, one, none = (report.analyse(image_dir, model, batch_size=2, progress=False, keep=keep)
                       for keep in (None, 1, 0))
    assert len(one.images) == 1 and all(r.value.shape[0] == 1 for r in one.records)
    assert none.records == [] and len(none.images) == 0
    assert one.summaries == full.summaries == none.summaries
    assert [r["layer"] for r in none.layer_table()] == [r.key for r in full.records]


def test_radix_balance():
    even = torch.full((1, 2, 8), 0.5)
    onehot = torch.zeros(1, 2, 8)
    onehot[:, 0] = 1
    assert report.layer_stats("radix", even)["balance"] == [pytest.approx(1.0)]
    assert report.layer_stats("radix", onehot)["balance"] == [pytest.approx(0.0)]
    assert report.layer_stats("radix", onehot)["mean_a0"] == [pytest.approx(1.0)]


def test_notebook_is_committed_clean_and_takes_the_one_parameter_set():
    nb = nbformat.read(report.default_notebook(), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    tree = ast.parse(code[0].source)
    names = {t.id for node in tree.body for t in node.targets}
    assert names == {"parameters", "stage"}  # nothing repeated from ReportParameters
    given = ast.literal_eval(tree.body[0].value)
    assert set(given) <= set(ReportParameters.__dataclass_fields__)
    assert "widgets" not in "".join(c.source for c in code)


def test_parameters_are_defined_once():
    """validate, the CLI options and the notebook all come from ReportParameters."""
    fields = ReportParameters.__dataclass_fields__
    parser = cli.build_parser()
    args = parser.parse_args(["report", "x.png"])
    options = report.cli_options(args)
    assert set(options) <= set(fields) and "max_figures" in options
    for name, value in options.items():
        assert value == fields[name].default, name
    assert report.validate(images=["x.png"]).max_figures == report.MAX_FIGURES == 100
    with pytest.raises(attnviz.ParameterError, match="unknown report option"):
        report.validate(images=["x.png"], max_figure=3)


def test_cli_report_in_process(image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        ["report", str(image_dir), "--model", MODEL, "--out", str(out), "--batch-size", "2"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out / "report.html") in captured.out
    assert "warning: 3 input(s) could not be read" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        ".attnviz", ".attnviz.lock", "report.html", "summary.csv", "summary.json"]
    assert not list(tmp_path.glob(".*partial*"))  # the staging folder is gone

    page = (out / "report.html").read_text()
    assert "data:image/png;base64" in page
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page and "img/s" not in page
    section = page[page.index("Could not read") : page.index("Per image")]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["could_not_read"]) == len(BAD)
    for item in summary["could_not_read"]:
        assert Path(item["image"]).name in section
        assert item["reason"] in section.replace("&#39;", "'").replace("&#34;", '"')
        assert BAD[Path(item["image"]).name] in item["reason"]
    assert f'content="{summary["run_id"]}"' in page

    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    good = good_files(image_dir)
    assert len(rows) == len(good) * 16
    assert sorted({Path(r["image"]).name for r in rows}) == good
    assert {r["kind"] for r in rows} == {"channel", "spatial"}
    # per image: the input, 8 spatial masks over it, 8 blocks of channel bars
    n = len(good)
    assert figure_counts(page) == {"sections": n, "inputs": n, "overlays": 8 * n, "svg": 8 * n}


def test_real_command_with_attribution_and_a_mathtext_file_name(image_dir, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(attnviz.sample_images("shapes")[0], images / MATHTEXT)
    shutil.copy(attnviz.sample_images("shapes")[1], images / "plain.png")
    out = tmp_path / "cmd"
    proc = subprocess.run(
        [sys.executable, "-m", "attnviz.cli", "report", str(images / "*.png"), "--model", MODEL,
         "--layers", "layer3*", "--top-k", "3", "--attribution", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr
    assert "report.html" in proc.stdout and " s" in proc.stdout
    page = (out / "report.html").read_text()
    assert "Attention vs attribution" in page and "Grad-CAM" in page
    assert page.count(f"{MATHTEXT}</code>") == 2  # its figures and its attribution row
    assert not EXTERNAL.search(page)
    with open(out / "summary.csv", newline="") as f:
        layers = {r["layer"] for r in csv.DictReader(f)}
    assert layers == {
        "layer3.0.attn.channel",
        "layer3.0.attn.spatial",
        "layer3.1.attn.channel",
        "layer3.1.attn.spatial",
    }


def test_attribution_needs_a_spatial_mask(image_dir):
    run = report.analyse(image_dir / "shapes_*.png", "demo-se", device="cpu", progress=False)
    section = report.attribution_section(run)
    assert "no spatial attention mask" in section["skipped"]
    assert "demo-se" in section["skipped"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "nope"], ["unknown model", "nope"]),
        (["--layers", "zzz*"], ["zzz*", "matches none"]),
        (["--top-k", "0"], ["--top-k", "at least 1"]),
        (["--max-figures", "-1"], ["--max-figures", "at least 0"]),
        (["--batch-size", "x"], ["--batch-size", "integer"]),
        (["--device", "gpu7"], ["device", "gpu7"]),
        (["--checkpoint", "missing.safetensors"], ["missing.safetensors"]),
    ],
)
def test_invalid_parameters_exit_2(image_dir, tmp_path, capsys, args, words):
    code = cli.main(
        ["report", str(image_dir), "--model", MODEL, "--out", str(tmp_path / "o"), *args]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: "), err
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_no_images_matched_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli.main(["report", str(tmp_path / "nothing" / "*.png"), str(tmp_path / "empty"),
                     "--model", MODEL, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("attnviz: error: no images found"), err
    assert "matched no file" in err and "no image files" in err


def test_help_documents_exit_codes(capsys):
    assert cli.main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit codes" in text and "invalid parameters" in text and "NaN or infinite" in text
    for option in ("--model", "--checkpoint", "--layers", "--device", "--out", "--top-k",
                   "--max-figures", "--attribution", "--batch-size", "--workers", "--notebook"):
        assert option in text
    assert "(default: 100)" in text
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in ("report", "train", "evaluate", "lab", "exit codes"))


def test_timm_name_means_pretrained_weights_offline_exit_2(image_dir, tmp_path, capsys, offline):
    code = cli.main(
        ["report", str(image_dir), "--model", "resnest14d", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "could not fetch pretrained weights for 'resnest14d'" in err and "checkpoint" in err


def test_amp_batch_path_records_float32_close_to_fp32(image_dir):
    full = report.analyse(image_dir, "demo-cbam", device="cpu", progress=False)
    mixed = report.analyse(image_dir, "demo-cbam", device="cpu", progress=False, amp=True)
    assert mixed.paths == full.paths
    for a, b in zip(full.records, mixed.records, strict=True):
        assert a.key == b.key and b.value.dtype == torch.float32
        assert (a.value - b.value).abs().max() < 0.04  # bf16 autocast on the CPU (0.021 seen)
    assert torch.equal(full.logits.argmax(1), mixed.logits.argmax(1))


def test_amp_records_exactly_what_the_network_multiplied():
    """Under bf16 autocast the recorded mask is the very tensor the block multiplied by (as
    float32), not a recomputation at another precision."""
    model = attnviz.load_model("demo-cbam", device="cpu")
    x = attnviz.models.prepare(model, attnviz.load_image(attnviz.sample_images("shapes")[0]))
    seen = {}
    spatial = model.get_submodule("layer3.0.attn.spatial.gate")  # outputs the mask A
    handle = spatial.register_forward_hook(lambda m, i, o: seen.update(out=o.detach().clone()))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
                attnviz.record(model) as rec:
            model(x)
    finally:
        handle.remove()
    recorded = rec.spatial["layer3.0.attn.spatial"]
    assert recorded.dtype == torch.float32
    assert torch.equal(recorded, seen["out"].float().reshape(recorded.shape))


def test_reader_thread_keeps_order_reraises_and_stops():
    import threading

    from attnviz.report.inputs import prefetch

    assert list(prefetch(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetch(failing()))
    it = prefetch(iter(range(10**6)))
    assert next(it) == 0
    it.close()  # leaving the loop early stops the reader
    assert not any(t.name == "attnviz-report-reader" for t in threading.enumerate())


def test_figures_bounded_as_a_whole(image_dir, monkeypatch):
    """The images and weights kept for figures are bounded for the whole report (not per
    batch): past the bound no more figures, and the page says why; summaries cover all."""
    from attnviz.report import collect

    full = report.analyse(image_dir, "demo-cbam", device="cpu", progress=False, batch_size=2)
    per_image = (full.images[0].numel() + sum(r.value[0].numel() for r in full.records)) * 4
    monkeypatch.setattr(collect.Collector.__init__, "__defaults__", (2 * per_image + 1,))
    run = report.analyse(image_dir, "demo-cbam", device="cpu", progress=False, batch_size=2)
    assert len(run.images) == 2 and run.figures_limited
    assert all(r.value.shape[0] == 2 for r in run.records)
    assert len(run.paths) == len(full.paths) and len(run.summaries) == len(full.summaries)
