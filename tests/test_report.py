"""`attnviz report`: the batch analysis, the CLI (exit codes, messages) and the HTML report.

The full notebook runs twice (once in-process, once as a real subprocess); every model is the
random-init ``demo_cbam_resnet`` so nothing depends on trained checkpoints.
"""

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

import attnviz
from attnviz import cli, report
from attnviz.images import load_image
from attnviz.models.preprocess import prepare

MODEL = "demo_cbam_resnet"
BAD = {  # file name -> a word its reason must contain
    "empty.png": "empty",
    "notes.jpg": "not an image",
    "truncated.png": "truncated",
}
EXTERNAL = re.compile(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=[\"']?(?:https?:)?//", re.I)


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


def test_collate_separates_bad_images(image_dir):
    ds = report.ImageFiles(sorted(image_dir.iterdir()), size=32)
    idx, batch, bad = report.collate_images([ds[i] for i in range(len(ds))])
    names = [ds.paths[i].rsplit("/", 1)[-1] for i in idx]
    assert names == good_files(image_dir)
    assert batch.shape == (len(idx), 3, 32, 32)
    assert {ds.paths[i].rsplit("/", 1)[-1] for i, _ in bad} == set(BAD)


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
    assert all(r.value.device.type == "cpu" for r in run.records)
    assert len(run.summaries) == n * len(run.records)
    rows = {(Path(s["image"]).name, s["layer"]): s for s in run.summaries}
    for i, path in enumerate(run.paths):
        # the batched records equal a plain one-image forward pass
        with torch.no_grad(), attnviz.record(model) as rec:
            logits = model(prepare(model, load_image(path)))
        torch.testing.assert_close(run.logits[i], logits[0], atol=1e-4, rtol=1e-4)
        assert run.predictions[i].index == int(logits.argmax())
        for r in rec.latest():
            torch.testing.assert_close(
                run.by_kind(r.kind)[r.name][i], r.value[0], atol=1e-5, rtol=1e-5
            )
            row = rows[(Path(path).name, r.name)]
            v = r.value[0]
            assert row["kind"] == r.kind
            assert row["mean"] == pytest.approx(float(v.mean()), abs=1e-5)
            assert row["min"] == pytest.approx(float(v.min()), abs=1e-5)
            assert row["max"] == pytest.approx(float(v.max()), abs=1e-5)
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


def test_radix_balance():
    even = torch.full((1, 2, 8), 0.5)
    onehot = torch.zeros(1, 2, 8)
    onehot[:, 0] = 1
    assert report.layer_stats("radix", even)["balance"] == [pytest.approx(1.0)]
    assert report.layer_stats("radix", onehot)["balance"] == [pytest.approx(0.0)]
    assert report.layer_stats("radix", onehot)["mean_a0"] == [pytest.approx(1.0)]


def test_notebook_is_committed_clean():
    nb = nbformat.read(report.default_notebook(), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    names = {t.id for node in ast.parse(code[0].source).body for t in node.targets}
    assert {
        "images",
        "model",
        "checkpoint",
        "layers",
        "device",
        "out_dir",
        "top_k",
        "attribution",
        "batch_size",
        "num_workers",
    } <= names
    assert "widgets" not in "".join(c.source for c in code)


def test_cli_report_in_process(image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        ["report", str(image_dir), "--model", MODEL, "--out", str(out), "--batch-size", "2"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out / "report.html") in captured.out
    assert "warning: 3 input(s) could not be read" in captured.err
    for name in ("report.html", "report.ipynb", "summary.csv", "summary.json"):
        assert (out / name).is_file(), name

    page = (out / "report.html").read_text()
    assert "data:image/png;base64" in page
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert report.external_resources(page) == []
    assert "img/s" not in page  # progress bars go to the terminal, not into the report
    section = page[page.index("Could not read") : page.index("Per image")]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["could_not_read"]) == len(BAD)
    for item in summary["could_not_read"]:
        assert Path(item["image"]).name in section
        assert item["reason"] in section.replace("&#x27;", "'")
        assert BAD[Path(item["image"]).name] in item["reason"]

    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    good = good_files(image_dir)
    assert len(rows) == len(good) * 16
    assert sorted({Path(r["image"]).name for r in rows}) == good
    assert {r["kind"] for r in rows} == {"channel", "spatial"}
    nb = nbformat.read(out / "report.ipynb", as_version=4)
    pngs = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pngs) == 2 * len(good)  # a spatial grid and channel bars per image
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_real_command_with_attribution(image_dir, tmp_path):
    out = tmp_path / "cmd"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnviz.cli",
            "report",
            str(image_dir / "shapes_*.png"),
            "--model",
            MODEL,
            "--layers",
            "layer3*",
            "--top-k",
            "3",
            "--attribution",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr
    assert "report.html" in proc.stdout and " s" in proc.stdout
    page = (out / "report.html").read_text()
    assert "Attention vs attribution" in page and "gradcam" in page
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
    run = report.analyse(image_dir / "shapes_*.png", "demo_se_resnet", device="cpu", progress=False)
    items = report.attribution_section(run)
    assert len(items) == 2 and "no spatial attention mask" in items[1].data
    assert "demo_se_resnet" in items[1].data


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "nope"], ["unknown model", "nope"]),
        (["--layers", "zzz*"], ["zzz*", "matches none"]),
        (["--top-k", "0"], ["--top-k", "at least 1"]),
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
    code = cli.main(
        [
            "report",
            str(tmp_path / "nothing" / "*.png"),
            str(tmp_path / "empty"),
            "--model",
            MODEL,
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("attnviz: error: no images found"), err
    assert "matched no file" in err and "no image files" in err


def test_notebook_failure_exit_1(image_dir, tmp_path, capsys, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell("images = []")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('boom in the report')")]
    path = tmp_path / "failing.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(report, "default_notebook", lambda: path)
    code = cli.main(["report", str(image_dir), "--model", MODEL, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "RuntimeError: boom in the report" in err and "Traceback" not in err
    assert (tmp_path / "o" / "report.ipynb").is_file()


def test_help_documents_exit_codes(capsys):
    assert cli.main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit codes" in text and "invalid parameters" in text
    for option in (
        "--model",
        "--checkpoint",
        "--layers",
        "--device",
        "--out",
        "--top-k",
        "--attribution",
        "--batch-size",
        "--workers",
    ):
        assert option in text
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
        assert a.name == b.name and b.value.dtype == torch.float32
        assert (a.value - b.value).abs().max() < 0.1  # bf16 autocast on the CPU
    agree = (full.logits.argmax(1) == mixed.logits.argmax(1)).float().mean()
    assert agree >= 0.75
