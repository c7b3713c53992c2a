"""One definition of each kind: the report, the stats and the explorer read the same entry of
:mod:`attnviz.kinds`, and the honest scales of :mod:`attnviz.vis` follow it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attnviz import kinds, vis
from attnviz.kinds import KINDS
from attnviz.record import AttentionRecord
from attnviz.report.figures import image_groups
from attnviz.stats.layers import AGGREGATES, LayerSpec, make_layer

SHAPES = {"spatial": (4, 4), "context": (4, 4), "gate": (3, 4, 4), "attention": (2, 16, 16),
          "channel": (8,), "radix": (2, 8), "paths": (2, 8)}


def _record(kind: str) -> AttentionRecord:
    value = torch.rand(1, *SHAPES[kind])
    meta = {"q_grid": (4, 4), "k_grid": (4, 4)} if kind == "attention" else {}
    return AttentionRecord(name="m", kind=kind, value=value, module_type="M", order=0,
                           stage=None, block=None, call=0, meta=meta)


def _spec(kind: str) -> LayerSpec:
    return LayerSpec("m", "m", kind, SHAPES[kind], "M", 0)


def test_every_kind_has_one_complete_entry() -> None:
    assert set(SHAPES) == set(KINDS)
    for name, entry in KINDS.items():
        assert entry.name == name and entry.title and entry.formula
        assert entry.scale in ("fixed", "uniform") and entry.aggregate in AGGREGATES
        assert (entry.scale == "uniform") <= (entry.normalised_over is not None)
    with pytest.raises(Exception, match="unknown attention kind"):
        kinds.kind("nope")


@pytest.mark.parametrize("name", list(KINDS))
def test_report_stats_and_explorer_read_the_entry(name, monkeypatch) -> None:
    from attnviz.widgets.analysis import drawable

    entry = KINDS[name]
    groups = image_groups([_record(name)], 0, top_k=3)
    assert [g.title.split(":")[0] for g in groups] == [entry.title]
    assert type(make_layer(_spec(name), 1, torch.device("cpu"), False)) is \
        AGGREGATES[entry.aggregate]
    assert (name in drawable()) == entry.explorer
    label = vis.to_unit(np.full(4, 0.25), name)[1]
    assert label == (vis.UNIFORM_LABEL if entry.scale == "uniform" else vis.FIXED_LABEL)

    # change the entry: all three follow it
    other = "features" if entry.aggregate != "features" else "map"
    changed = dataclasses.replace(entry, title=f"renamed {name}", aggregate=other,
                                  explorer=not entry.explorer)
    monkeypatch.setitem(KINDS, name, changed)
    assert image_groups([_record(name)], 0, top_k=3)[0].title.startswith(f"renamed {name}")
    assert type(make_layer(_spec(name), 1, torch.device("cpu"), False)) is AGGREGATES[other]
    assert (name in drawable()) == changed.explorer


def test_uniform_scale_reads_one_times_for_a_uniform_row() -> None:
    unit, label = vis.to_unit(np.full(64, 1 / 64), "attention")
    assert np.allclose(unit, 0.5) and "uniform" in label
    peaked = np.full(64, 0.5 / 63)
    peaked[5] = 0.5
    unit, _ = vis.to_unit(peaked, "attention")
    assert unit[5] == 1.0 and unit[0] < 0.5  # 32× uniform clips at the top; the rest below 1×
    fixed, _ = vis.to_unit(np.array([0.2, 0.9]), "spatial")
    assert fixed.tolist() == [0.2, 0.9]  # gates: the value itself on the 0–1 scale
