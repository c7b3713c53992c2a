"""Every deliberate error is an AttnvizError with one readable line, never a bare ValueError."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import attnviz
from attnviz import plot
from attnviz.attribution_plots import plot_agreement
from attnviz.datasets import make_shapes
from attnviz.metrics import topk_iou
from attnviz.nn import SpatialAttention, create_attn
from attnviz.terminal import one_line, shown

CASES: list[tuple[str, Callable[[], object], type[attnviz.AttnvizError], str]] = [
    ("create_model unknown", lambda: attnviz.create_model("resnet9000"),
     attnviz.ModelError, "unknown attnviz model 'resnet9000'"),
    ("create_model bad value", lambda: attnviz.create_model("resnet18", num_classes="5"),
     attnviz.ParameterError, "num_classes"),
    ("create_model unknown option", lambda: attnviz.create_model("resnet18", bogus=3),
     attnviz.ParameterError, r"unknown option\(s\) \['bogus'\] for BasicBlock"),
    ("create_model unhashable", lambda: attnviz.create_model(["resnet18"]),  # type: ignore
     attnviz.ModelError, "unknown attnviz model"),
    ("sample_images kind", lambda: attnviz.sample_images("cats"),
     attnviz.ParameterError, "kind must be"),
    ("make_shapes n=0", lambda: make_shapes(0), attnviz.ParameterError, "n >= 1"),
    ("make_shapes str", lambda: make_shapes("5"), attnviz.ParameterError,  # type: ignore
     "needs integers"),
    ("make_shapes size", lambda: make_shapes(2, size=8), attnviz.ParameterError, "size >= 16"),
    ("create_attn unknown", lambda: create_attn("bogus", 8), attnviz.ParameterError,
     "unknown attention layer 'bogus'"),
    ("SpatialAttention even", lambda: SpatialAttention(4), attnviz.ParameterError, "odd"),
    ("channel_grid empty", lambda: plot.channel_grid({}), attnviz.ParameterError,
     "no channel weights"),
    ("spatial_grid empty", lambda: plot.spatial_grid(None, {}), attnviz.ParameterError,
     "no spatial masks"),
    ("radix_split_means empty", lambda: plot.radix_split_means({}), attnviz.ParameterError,
     "no radix weights"),
    ("channel_distribution 1-d", lambda: plot.channel_distribution(torch.ones(3)),
     attnviz.ParameterError, r"\(B, C\)"),
    ("plot_agreement empty", lambda: plot_agreement([]), attnviz.ParameterError,
     "at least one row"),
    ("topk_iou fraction", lambda: topk_iou(torch.ones(1, 4), torch.ones(1, 4), 0),
     attnviz.ParameterError, "fraction"),
]


@pytest.mark.parametrize(("call", "kind", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_deliberate_errors_are_attnviz_errors(call, kind, match) -> None:
    with pytest.raises(kind, match=match) as info:
        call()
    assert isinstance(info.value, attnviz.AttnvizError)
    assert "\n" not in str(info.value)


def test_one_line_strips_colours_and_escapes_control_characters() -> None:
    text = "Weights only load failed.\n\x1b[1mdo this\x1b[0m only \x1b]0;title\x07if \x07 ok\u202e"
    assert one_line(text) == "Weights only load failed. do this only if \\x07 ok\\u202e"


def test_shown_escapes_file_names() -> None:
    assert shown("a\nb\x1b[31m.png") == "'a\\nb\\x1b[31m.png'"
    assert shown("plain.png") == "'plain.png'"
    assert shown(b"bytes\xff.png") == "'bytes\\xff.png'"  # the byte, not a surrogate
