"""The report page: a context built from a :class:`ReportData`, rendered by the one
autoescaping Jinja2 template ``report.html.j2`` (shipped in this package, loaded with
:mod:`importlib.resources`). Self-contained: pictures are data URIs, no script, no style or
font from the network."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import torch

from ..models import DEMO_MODELS
from ..models.preprocess import input_spec
from ..outputs import CLASSIFIER, DENSE, NO_PREDICTION, NONE
from ..terminal import text_name
from .classes import MIN_SD, RULE
from .collect import MAX_KEPT_BYTES
from .figures import SIDE, class_groups, image_groups
from .localise import Localisation, localise
from .stats import COLUMNS, STAT_FIELDS
from .tiles import colour_bar_uri, image_uri, map_uri, outline_uri

if TYPE_CHECKING:
    from jinja2 import Template

    from .analysis import ReportData
    from .params import ReportParameters

TEMPLATE = "report.html.j2"


def number(value: object, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` decimals, NaN/Inf spelled out, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return f"{value:.{digits}f}"
    return str(value)


def percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _text(value: object) -> object:
    """Every value the page shows: text that is not valid UTF-8 escaped (file names)."""
    return text_name(value) if isinstance(value, str) else value


@lru_cache(maxsize=1)
def template() -> Template:
    """The page template (autoescaping on, undefined names are errors)."""
    from jinja2 import Environment, StrictUndefined

    text = files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, finalize=_text)
    env.filters.update(num=number, pct=percent)
    return env.from_string(text)


def _kinds(run: ReportData) -> str:
    counts: dict[str, int] = {}
    for info in run.layers_found:
        counts[info["kind"]] = counts.get(info["kind"], 0) + 1
    text = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none recorded"
    return text + (f" (pattern {run.layers!r})" if run.layers else "")


#: what the page says about the model's output, by kind (see :mod:`attnviz.outputs`)
OUTPUT_TEXT = {
    CLASSIFIER: "class logits: predictions per image",
    DENSE: "dense prediction (B, classes, H, W): the predicted class map is shown beside the "
           "attention; 'prediction' is the class covering most of the image",
    NONE: f"{NO_PREDICTION}: the model's output is not class logits (use --output to pick "
          "them); every attention weight is still shown",
}


def header(run: ReportData, params: ReportParameters) -> list[tuple[str, str]]:
    """The parameter table at the top of the page."""
    import attnviz

    spec = input_spec(run.model)
    norm = ("inside the model" if spec.mean is None else
            f"mean {', '.join(f'{m:g}' for m in spec.mean)}; std "
            f"{', '.join(f'{s:g}' for s in spec.std or ())}")
    shown = min(params.max_figures, len(run.images))
    return [
        ("model", run.model_name), ("device", run.device),
        ("images", f"{len(run)} analysed, {len(run.bad)} could not be read"),
        ("attention layers", _kinds(run)),
        ("output", OUTPUT_TEXT[run.output_kind] + (f" ({run.output_source})"
                                                   if run.output_kind != NONE else "")),
        ("input", f"{spec.size}×{spec.size} px, normalisation {norm}"),
        ("figures", f"for the first {shown} of {len(run)} image(s) (--max-figures "
                    f"{params.max_figures}"
                    + ("; fewer: the images and attention maps kept for figures are bounded "
                       f"to {MAX_KEPT_BYTES // 2**30} GiB in all" if run.figures_limited
                       else "") + "); the tables cover all"),
        ("created", f"{run.created}, analysis {run.seconds:.1f} s"),
        ("versions", f"attnviz {attnviz.__version__}, torch {torch.__version__}"),
        ("run", run.run_id),
    ]


def demo_note(run: ReportData) -> str | None:
    if run.model_name not in DEMO_MODELS:
        return None
    classes = ", ".join(getattr(run.model, "class_names", []))
    return (f"{run.model_name} was trained offline on generated shapes (64 px, classes "
            f"{classes}): its attention is meaningful on images like those, which come first "
            "below with their ground truth; other images are out of distribution for it.")


def layer_columns(rows: list[dict[str, Any]]) -> list[str]:
    """``layer, kind, shape`` and every statistic some row has."""
    return ["layer", "kind", "shape"] + [f for f in STAT_FIELDS
                                         if any(r.get(f) is not None for r in rows)]


def split_rows(run: ReportData) -> list[dict[str, str]]:
    """Mean ± sd (over images and channels) of each split weight, per layer."""
    return [{"layer": key, **{f"split {s}": f"{m:.3f} ± {d:.3f}"
                              for s, (m, d) in enumerate(means)}}
            for key, means in run.split_means.items()]


def tables(run: ReportData) -> dict[str, Any]:
    """The summary tables (page and notebook)."""
    layers = run.layer_table()
    splits = split_rows(run)
    return {
        "layers": layers, "layer_columns": layer_columns(layers), "definitions": COLUMNS,
        "splits": splits, "split_columns": list(splits[0]) if splits else [],
        "predictions": [{"#": i + 1, "image": p, "prediction": q.label, "prob": q.prob}
                        for i, (p, q) in enumerate(zip(run.paths, run.predictions,
                                                       strict=True))],
        "bad": run.bad, "non_finite": run.non_finite,
    }


def _predicted_map(run: ReportData, i: int) -> dict[str, Any] | None:
    """The predicted class map of image ``i`` of a dense output: one cell per output pixel,
    colour = class index on the page's colour map (0 → K-1)."""
    maps = run.predicted_maps
    if maps is None or i >= len(maps):
        return None
    k = max(1, run.logits.shape[1] - 1)
    m = maps[i]
    return {"uri": map_uri(m.float().numpy() / k), "shape": tuple(m.shape),
            "classes": run.logits.shape[1]}


def sections(run: ReportData, loc: Localisation, images: list[dict[str, Any]],
             ) -> list[dict[str, Any]]:
    """The per-image figures in sections: for a model trained on generated shapes, the images it
    was trained for (with ground truth) first, then the others, headed as out of distribution;
    for any other model one untitled section."""
    inside = [im for i, im in enumerate(images) if loc.in_distribution(i)]
    if loc.trained_on != "shapes":
        return [{"title": None, "images": images}]
    outside = [im for i, im in enumerate(images) if not loc.in_distribution(i)]
    out = []
    if inside:
        out.append({"id": "in-distribution", "images": inside,
                    "title": f"In distribution: generated shapes ({len(inside)})",
                    "note": "What the model was trained on. The object is outlined (ground "
                            "truth); under each image, whether each spatial mask peaks on the "
                            "object and its energy-in-box (the mask's mass in the object's box "
                            "÷ the box's share of the image; 1.0 = no preference), beside a "
                            "random-init copy of the same network on the same image."})
    if outside:
        out.append({"id": "out-of-distribution", "images": outside,
                    "title": f"Out of distribution for {run.model_name} ({len(outside)})",
                    "note": f"{run.model_name} was trained only on generated shapes: on these "
                            "images its predictions and masks show what a small model does with "
                            "unfamiliar input, not what it attends to. For photos, run online "
                            "with an ImageNet model: attnviz report IMAGES --model resnest50d."})
    return out


def css_name(i: int) -> str:
    return f"img{i}"


def page_context(run: ReportData, params: ReportParameters,
                 attribution: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the template draws."""
    shown = min(params.max_figures, len(run.images))
    loc = localise(run) if shown else Localisation()
    images = [{"n": i + 1, "path": run.paths[i], "pred": run.predictions[i], "css": css_name(i),
               "size": tuple(run.images[i].shape[-2:]),
               "predicted_map": _predicted_map(run, i),
               "outline": outline_uri(loc.masks[i].numpy()) if i in loc.masks else None,
               "localisation": loc.rows.get(i),
               "groups": image_groups(run.records, i, params.top_k)} for i in range(shown)]
    return {
        "title": f"attnviz report: {run.model_name}", "run_id": run.run_id,
        "header": header(run, params), "demo_note": demo_note(run),
        "random_weights": run.random_weights, "output_kind": run.output_kind,
        "backgrounds": [(css_name(i), image_uri(run.images[i])) for i in range(shown)],
        "colour_bar": colour_bar_uri(), "images": images, "n_images": len(run), "side": SIDE,
        "sections": sections(run, loc, images),
        "tables": tables(run), "attribution": attribution, "top_k": params.top_k,
        "class_groups": class_groups(run.class_channels), "class_rule": RULE,
        "class_min_sd": f"{MIN_SD:g}",
    }


def render_page(run: ReportData, params: ReportParameters,
                attribution: dict[str, Any] | None = None) -> str:
    """The whole page as text."""
    return template().render(page=page_context(run, params, attribution)).lstrip()


def tables_html(run: ReportData) -> str:
    """The summary tables alone (the report notebook displays them)."""
    return str(template().module.summary_tables(tables(run)))  # type: ignore[attr-defined]


__all__ = ["TEMPLATE", "header", "number", "page_context", "render_page", "tables",
           "tables_html", "template"]
