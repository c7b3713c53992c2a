"""Leaks and misuse: flat memory over repeated recording, freed recorders, refused misuse."""

from __future__ import annotations

import gc
import weakref

import psutil
import pytest
import torch
from torch import nn

import attnviz
from attnviz.nn import CBAM, SqueezeExcite


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SqueezeExcite(8, 4), CBAM(8, 4, 3)).eval()


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _live(kind: type) -> int:
    """Objects of exactly type ``kind`` the garbage collector knows of, after a collection."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_thousand_recorded_passes_keep_memory_flat() -> None:
    """No tensor or record outlives its recorder: live counts are flat over 1000 passes (one
    leaked record per pass would add 1000 records and 1000+ tensors), and so is RSS."""
    model, x = _tiny(), torch.randn(2, 3, 16, 16)
    proc = psutil.Process()

    def run(n: int) -> None:
        for _ in range(n):
            with torch.no_grad(), attnviz.record(model) as rec:
                model(x)
            assert len(rec.records) == 3
        del rec

    run(100)  # warm-up: allocator pools, lazy imports, caches
    tensors, records = _live(torch.Tensor), _live(attnviz.AttentionRecord)
    before = proc.memory_info().rss
    run(1000)
    assert _live(attnviz.AttentionRecord) == records
    assert _live(torch.Tensor) - tensors <= 2  # slack for a lazily created cache entry
    grown_mb = (proc.memory_info().rss - before) / 2**20
    assert grown_mb < 8, f"RSS grew {grown_mb:.1f} MB over 1000 recorded passes"
    assert _hooks(model) == 0


def test_recorders_are_freed_and_leave_no_hooks() -> None:
    model, x = _tiny(), torch.randn(1, 3, 16, 16)
    refs = []
    for _ in range(20):
        with attnviz.record(model) as rec:
            model(x)
        refs.append(weakref.ref(rec))
    del rec
    gc.collect()
    assert all(r() is None for r in refs)
    assert _hooks(model) == 0


def test_hooks_removed_when_forward_raises_then_model_usable() -> None:
    model = _tiny()
    with pytest.raises(RuntimeError), attnviz.record(model):
        model(torch.randn(1, 5, 16, 16))  # wrong channel count
    assert _hooks(model) == 0
    with attnviz.record(model) as rec:
        model(torch.randn(1, 3, 16, 16))
    assert set(rec.channel) == {"1", "2.channel"}


def test_second_recorder_is_refused_and_first_keeps_working() -> None:
    model, x = _tiny(), torch.randn(1, 3, 16, 16)
    with attnviz.record(model) as first:
        with pytest.raises(attnviz.RecorderBusyError, match="already being recorded"):
            with attnviz.record(model):
                pass
        model(x)
    assert len(first.records) == 3 and _hooks(model) == 0
    with attnviz.record(model) as again:  # free again after the first one ended
        model(x)
    assert len(again.records) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=""), "non-empty pattern"),
        (dict(layers="nothing*"), "'nothing\\*'\\] matches none of the 3 attention sites"),
        (dict(kinds=["bogus"]), "unknown attention kind"),
        (dict(kinds=["radix"]), "kinds \\['radix'\\] matches none"),
    ],
)
def test_bad_recorder_parameters_have_readable_errors(kwargs: dict, match: str) -> None:
    """Refused at once when the pattern itself is bad; a filter matching nothing is refused
    after the first watched pass (hand-written attention is only known then), and at once on
    later recordings of the same model."""
    model = _tiny()
    with pytest.raises(attnviz.AttnvizError, match=match):
        with torch.no_grad(), attnviz.record(model, **kwargs):
            model(torch.randn(1, 3, 16, 16))
    with pytest.raises(attnviz.AttnvizError, match=match):
        attnviz.record(model, **kwargs)


def test_record_refuses_non_modules() -> None:
    with pytest.raises(attnviz.ParameterError, match="torch.nn.Module"):
        attnviz.record("resnet50")  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_bad_device_is_a_parameter_error(device: str) -> None:
    with pytest.raises(attnviz.ParameterError, match="device"):
        attnviz.load_model("demo_se_resnet", device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_memory_flat_over_thousand_passes() -> None:
    model, x = _tiny().cuda(), torch.randn(2, 3, 16, 16, device="cuda")
    for _ in range(50):
        with torch.no_grad(), attnviz.record(model):
            model(x)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        with torch.no_grad(), attnviz.record(model):
            model(x)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before <= 0
