"""The thread rule: only the cores nobody else is using, at least one; ``--threads`` overrides;
the count is restored after a library call."""

from __future__ import annotations

import os

import pytest
import torch

import attnviz
from attnviz import cli, threads


@pytest.mark.parametrize("cores, load, expected", [
    (8, 0.0, 8), (8, 3.2, 5), (2, 1.1, 1), (2, 5.0, 1), (4, 0.4, 4)])
def test_free_cores(monkeypatch, cores, load, expected) -> None:
    monkeypatch.setattr(threads, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert threads.free_cores() == expected


def test_unknown_load_means_every_core(monkeypatch) -> None:
    monkeypatch.setattr(threads, "cpu_count", lambda: 3)

    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_load)
    assert threads.free_cores() == 3


def test_using_sets_and_restores(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "free_cores", lambda: 4)
    with threads.using() as n:
        assert n == torch.get_num_threads() == 4
    assert torch.get_num_threads() == before
    with threads.using(share=3) as n:  # the free cores shared among a run's processes
        assert n == 1
    with threads.using(2) as n:
        assert n == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_report_runs_with_the_chosen_threads(tmp_path, monkeypatch) -> None:
    from attnviz.report import analysis

    seen = []
    real = analysis.forward

    def spy(*a, **kw):
        seen.append(torch.get_num_threads())
        return real(*a, **kw)

    monkeypatch.setattr(analysis, "forward", spy)
    images = str(attnviz.sample_images("shapes")[0])
    assert cli.main(["report", images, "--model", "demo-cbam", "--threads", "2", "--out",
                     str(tmp_path / "r")]) == 0
    assert seen == [2]


@pytest.mark.parametrize("command", [["report", "x.png"], ["stats", "shapes:2"],
                                     ["evaluate"]])
def test_bad_threads_is_one_line(command, capsys) -> None:
    code = cli.main([*command, "--threads", "0", "--out" if command[0] != "evaluate" else
                     "--n", "o" if command[0] != "evaluate" else "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("attnviz: error:") and "threads" in err
