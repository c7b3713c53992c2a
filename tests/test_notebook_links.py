"""``attnviz notebooks DEST`` never follows a symlink planted in DEST: without --force a link
named like a notebook (dangling too) is refused, with --force the link itself is replaced and
the file it points to is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnviz import cli
from attnviz.resources import notebook_paths

NAME = "explorer.ipynb"


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """DEST holding a dangling link and a link to a file outside DEST."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / NAME).symlink_to(outside / "written-through-the-link")  # dangling
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    (dest / "00_quickstart.ipynb").symlink_to(victim)
    return dest, outside, victim


def test_links_are_refused_without_force(planted, capsys) -> None:
    dest, outside, victim = planted
    assert cli.main(["notebooks", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnviz: error:") and NAME in err and "--force" in err
    assert not (outside / "written-through-the-link").exists()
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in dest.iterdir()) == ["00_quickstart.ipynb", NAME]


def test_force_replaces_the_links_not_their_targets(planted) -> None:
    dest, outside, victim = planted
    assert cli.main(["notebooks", str(dest), "--force"]) == 0
    assert not (outside / "written-through-the-link").exists()
    assert victim.read_text() == "keep me"
    for src in notebook_paths():
        copied = dest / src.name
        assert not copied.is_symlink() and copied.read_bytes() == src.read_bytes()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_folder_named_like_a_notebook_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / NAME).mkdir()
    assert cli.main(["notebooks", str(tmp_path), "--force"]) == 2
    assert capsys.readouterr().err.startswith("attnviz: error: cannot write the notebooks")
