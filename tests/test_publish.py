"""The one publisher (attnviz.publish), without a model: outputs switch by one rename.

The kill tests of a real report are in test_claims.py (SIGKILL at every step); here the layout:
links through ``OUT/.attnviz/KIND/current``, folders as outputs (stats' ``per_image/``), names
a run does not write, earlier runs removed, plain outputs adopted, two kinds side by side."""

from __future__ import annotations

import os
from pathlib import Path

from attnviz.publish import HOME, Publisher, link_text

FILES = ("per_image", "page.html", "result.json")


def _publish(out: Path, contents: dict[str, str], what: str = "stats run",
             stage: str | None = ".work") -> None:
    with Publisher(out, FILES if what.startswith("stats") else ("report.html",), what=what,
                   stage=stage) as pub:
        for name, text in contents.items():
            if name == "per_image":
                (pub.stage / name).mkdir()
                (pub.stage / name / "rank-0.txt").write_text(text)
            else:
                (pub.stage / name).write_text(text)
        pub.publish()


def _seen(out: Path) -> dict[str, str]:
    """What a reader sees through the names in ``out``."""
    seen = {}
    for name in FILES:
        p = out / name
        if p.is_dir():
            seen[name] = (p / "rank-0.txt").read_text()
        elif p.is_file():
            seen[name] = p.read_text()
    return seen


def test_outputs_are_links_switched_by_one_rename(tmp_path) -> None:
    out = tmp_path / "out"
    _publish(out, {"per_image": "1", "page.html": "1", "result.json": "1"})
    assert _seen(out) == {"per_image": "1", "page.html": "1", "result.json": "1"}
    for name in FILES:
        assert os.readlink(out / name) == link_text("stats", name)
    first = os.readlink(out / HOME / "stats" / "current")
    _publish(out, {"per_image": "2", "result.json": "2"})  # no page this time
    assert _seen(out) == {"per_image": "2", "result.json": "2"}
    assert not os.path.lexists(out / "page.html")  # the old run's page is not left behind
    runs = out / HOME / "stats" / "runs"
    assert [p.name for p in runs.iterdir()] == [Path(os.readlink(runs.parent / "current")).name]
    assert os.readlink(runs.parent / "current") != first
    assert not (out / ".work").exists()


def test_plain_outputs_of_an_earlier_attnviz_are_adopted(tmp_path) -> None:
    out = tmp_path / "out"
    (out / "per_image").mkdir(parents=True)
    (out / "per_image" / "rank-0.txt").write_text("old")
    (out / "page.html").write_text("old")
    (out / "notes.txt").write_text("the user's own file")
    _publish(out, {"per_image": "new", "page.html": "new", "result.json": "new"})
    assert _seen(out) == {"per_image": "new", "page.html": "new", "result.json": "new"}
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert len(list((out / HOME / "stats" / "runs").iterdir())) == 1


def test_two_kinds_in_one_folder_keep_each_others_outputs(tmp_path) -> None:
    out = tmp_path / "out"
    _publish(out, {"page.html": "stats"})
    _publish(out, {"report.html": "report"}, what="report", stage=None)
    _publish(out, {"page.html": "stats 2"})
    assert (out / "report.html").read_text() == "report"
    assert (out / "page.html").read_text() == "stats 2"


def test_a_run_that_does_not_publish_changes_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    _publish(out, {"page.html": "1"}, stage=None)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with Publisher(out, FILES, what="stats run") as pub:
        (pub.stage / "page.html").write_text("2")
    assert (out / "page.html").read_text() == "1"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_a_folder_without_symbolic_links_is_refused_before_any_work(tmp_path,
                                                                    monkeypatch) -> None:
    import pytest

    from attnviz.errors import ParameterError

    def no_links(*_a, **_k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_links)
    with pytest.raises(ParameterError, match="cannot hold symbolic links.*another file system"):
        Publisher(tmp_path / "out", FILES, what="report").__enter__()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".attnviz.lock"]
