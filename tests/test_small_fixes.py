"""Small hardening fixes of the third reliability pass: each case once refused or escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attnviz

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_float64_weight_too_large_for_float32_is_refused(tmp_path, suffix: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in attnviz.create_model("demo_se_resnet").state_dict().items()}
    state["fc.weight"] = state["fc.weight"].double()
    state["fc.weight"][0, 0] = 1e300  # finite as float64, inf as float32
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(attnviz.CheckpointError, match=r"too large for the model's precision.*"
                                                      r"fc.weight \(float64 to float32\)"):
        attnviz.load_model("demo_se_resnet", checkpoint=path, device="cpu")


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    for p in attnviz.sample_images("shapes")[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def _labels(tmp_path, n: int):
    path = tmp_path / f"labels-{n}.txt"
    path.write_text("".join(f"class {i}\n" for i in range(n)))
    return path


@pytest.mark.parametrize("n", [2, 100_000])
@pytest.mark.parametrize("command", ["report", "stats"])
def test_labels_whose_count_differs_from_the_outputs_are_refused(tmp_path, two_images, capsys,
                                                                  n: int, command: str) -> None:
    from attnviz import cli

    out = tmp_path / "out"
    code = cli.main([command, str(two_images), "--model", "demo-cbam", "--out", str(out),
                     "--labels", str(_labels(tmp_path, n))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"attnviz: error: {n} class names (from --labels or the checkpoint) for a model " \
           "with 5 outputs" in err
    assert not (out / "report.html").exists() and not (out / "stats.json").exists()


def test_labels_matching_the_outputs_are_used(tmp_path, two_images) -> None:
    from attnviz import cli, report

    out = tmp_path / "out"
    assert cli.main(["report", str(two_images), "--model", "demo-cbam", "--out", str(out),
                     "--labels", str(_labels(tmp_path, 5))]) == 0
    labels = {p["label"] for p in report.read_summary(out)["predictions"]}
    assert labels <= {f"class {i}" for i in range(5)}


def test_checkpoint_class_list_of_the_wrong_length_is_refused(tmp_path, two_images,
                                                              capsys) -> None:
    from attnviz import cli
    from attnviz.models import save_weights

    ckpt = save_weights(attnviz.create_model("demo_cbam_resnet"), tmp_path / "w.safetensors",
                        metadata={"classes": ["a", "b"]})
    code = cli.main(["report", str(two_images), "--model", "demo_cbam_resnet", "--checkpoint",
                     str(ckpt), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "2 class names (from --labels or the checkpoint)" in capsys.readouterr().err


def test_labels_from_a_device_name_what_is_wrong(tmp_path, two_images, capsys) -> None:
    from attnviz import cli

    assert cli.main(["report", str(two_images), "--labels", "/dev/null", "--out",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err and "does not exist" not in err


@pytest.mark.parametrize("body,words", [
    ("import sys\nsys.exit(0)\n", "importing"),
    ("import sys\ndef build():\n    sys.exit(3)\n", "raised"),
])
def test_model_code_calling_sys_exit_is_an_error(tmp_path, two_images, capsys, body: str,
                                                 words: str) -> None:
    from attnviz import cli

    model_py = tmp_path / "quits.py"
    model_py.write_text(body)
    code = cli.main(["report", str(two_images), "--model", f"{model_py}:build", "--out",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("attnviz: error:") and words in err and "sys.exit(" in err, err
    assert not (tmp_path / "out").exists()


def test_help_says_that_model_runs_the_named_code(capsys) -> None:
    from attnviz import cli

    for command in (["report", "--help"], ["stats", "--help"]):
        assert cli.main(command) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "runs that code as `python file.py` would" in text
        assert "name only code you trust" in text


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
from attnviz.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["report"], ["stats", "--save-every", "0"],
                                  ["stats", "--per-image"]], ids=" ".join)
def test_a_full_disk_is_one_line(tmp_path, two_images, args) -> None:
    """Files may not grow past 3000 bytes (as on a full disk): one line, exit 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(attnviz.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, *args[:1], str(two_images), "--out",
                           str(tmp_path / "out"), "--no-progress" if args[0] == "stats" else
                           "--max-figures=2", *args[1:]], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("attnviz: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "File too large" in lines[0] or "writing the checkpoint failed" in lines[0]
    assert "free some space" in lines[0]
    published = {"report.html", "summary.csv", "stats.json", "stats.html"}
    assert not published & {p.name for p in (tmp_path / "out").iterdir()}


@pytest.mark.parametrize("edit", ["d['layers'][0]['moments'] = {'x': 5}", "d.pop('layers')",
                                  "d['layers'][0]['moments']['s']['mean']['shape'] = [9**7, 9]",
                                  "d['classes']['names'] = 5", "d['model'] = None"])
def test_malformed_stats_json_to_stats_html_is_one_line(tmp_path, two_images, capsys,
                                                        edit: str) -> None:
    import json

    from attnviz import cli

    assert cli.main(["stats", str(two_images), "--out", str(tmp_path / "s"),
                     "--no-progress"]) == 0
    capsys.readouterr()
    d = json.loads((tmp_path / "s" / "stats.json").read_text())
    exec(edit, {"d": d})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    assert cli.main(["stats-html", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnviz: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "stats.html").exists()


def test_control_characters_in_labels_are_escaped(tmp_path) -> None:
    from attnviz.models.user import read_labels

    path = tmp_path / "labels.txt"
    path.write_text("red\x1b[31m\nplain\ncafé\n", encoding="utf-8")
    assert read_labels(path) == ["red\\x1b[31m", "plain", "café"]
