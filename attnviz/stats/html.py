"""``stats.html``: a self-contained page (figures as data URIs, no scripts) from ``stats.json``.

    attnviz stats-html OUT/stats.json            # rebuild OUT/stats.html, no model run
"""
from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.model import RANDOM_WEIGHTS
from ..errors import ParameterError
from ..outputs import CLASSIFIER, NO_PREDICTION, NONE
from ..terminal import one_line
from . import figures
from .document import read_stats

STYLE = """.alarm{background:#fde8e8;border:3px solid #c00;padding:4px 12px}
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right;font-size:13px}th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%}h2{border-bottom:1px solid #ddd;margin-top:1.8em}.note{color:#666}"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    head_row = f"<tr>{th}</tr>" if any(head) else ""
    return f"<table>{head_row}{body}</table>"


def feature(layer: dict, name: str) -> tuple[float, float] | None:
    """Mean and standard deviation over images of one per-image feature of a layer."""
    if name not in layer["features"]:
        return None
    m = layer["moments"]["features"]
    i = layer["features"].index(name)
    return float(m["mean"][0][i]), float(np.sqrt(m["var"][0][i]))


def _mean_sd(layer: dict, name: str) -> str:
    f = feature(layer, name)
    return "–" if f is None else f"{_num(f[0])} ± {_num(f[1])}"


def class_spread(layer: dict, counts: np.ndarray) -> float:
    """Standard deviation of the class means of s(c) across classes, averaged over channels
    (0: every class excites the channels alike)."""
    means = layer["moments"]["s"]["mean"][counts > 0]
    return float(means.std(0).mean()) if len(means) > 1 else float("nan")


def _channel(layers: list[dict], doc: dict) -> str:
    if not layers:
        return ""
    names, counts = doc["classes"]["names"], doc["classes"]["images"]
    rows = [(x["key"], x["shape"][0], _mean_sd(x, "mean"), _mean_sd(x, "entropy"),
             _num(class_spread(x, counts))) for x in layers]
    return ("<h2>Class-wise excitation (channel attention)</h2>"
            f"<p class='note'>Mean s(c) per channel for the {figures.MAX_LINES} largest classes "
            "(grouped by " + _e(doc["classes"]["grouping"]) + ") and all images, as in the SE "
            "paper's Fig. 6. Class spread: standard deviation of the class means, averaged "
            "over channels.</p>"
            + _img(figures.excitation(layers, names, counts), "class-wise excitation")
            + _table(["layer", "channels", "mean s(c)", "entropy", "class spread"], rows))


def _maps(layers: list[dict]) -> str:
    if not layers:
        return ""
    rows = [(x["key"], x["kind"], "×".join(map(str, x["shape"])), _mean_sd(x, "mean"),
             _mean_sd(x, "entropy"), _mean_sd(x, "peak_y"), _mean_sd(x, "peak_x"),
             _num((feature(x, "pointing") or (None,))[0]), _mean_sd(x, "energy"))
            for x in layers]
    parts = ["<h2>Spatial masks</h2>",
             _table(["layer", "kind", "cells", "mean", "entropy", "peak y", "peak x",
                     "pointing game", "energy in box"], rows)]
    parts += [_img(figures.mask(x), f"mask statistics {x['key']}") for x in layers]
    return "".join(parts)


def _splits(layers: list[dict], doc: dict) -> str:
    if not layers:
        return ""
    names, counts = doc["classes"]["names"], doc["classes"]["images"]
    rows = [(x["key"], x["kind"], "×".join(map(str, x["shape"])), _mean_sd(x, "mean"),
             _mean_sd(x, "balance"), _mean_sd(x, "entropy")) for x in layers]
    parts = ["<h2>Split attention: radix balance</h2><p class='note'>Balance 1: every channel "
             "splits evenly; 0: every channel picks one split.</p>",
             _table(["layer", "kind", "splits×channels", "mean a₀", "balance", "entropy"], rows)]
    parts += [_img(figures.split(x, names, counts), f"split weights {x['key']}") for x in layers]
    return "".join(parts)


def _attention(layers: list[dict]) -> str:
    if not layers:
        return ""
    rows = []
    for x in layers:
        ent = x["moments"]["head_entropy"]["mean"][0]
        dist = x["moments"].get("head_distance")
        for h in range(len(ent)):
            d = _num(dist["mean"][0][h]) if dist is not None else "–"
            rows.append((x["key"], h, _num(ent[h]), d))
    return ("<h2>Attention maps</h2><p class='note'>Per head: entropy of the attention rows "
            "(0–1, 1 = uniform) and mean attention distance in key-grid cells (as in the "
            "report; when the tokens are pixels).</p>"
            + _table(["layer", "head", "entropy", "distance"], rows))


def _gates(layers: list[dict]) -> str:
    if not layers:
        return ""
    rows = [(x["key"], "×".join(map(str, x["shape"])), _mean_sd(x, "mean"),
             _mean_sd(x, "entropy")) for x in layers]
    return "<h2>Other gates</h2>" + _table(["layer", "shape", "mean", "entropy"], rows)


def _overview(doc: dict) -> str:
    d, r, a, m = doc["data"], doc["run"], doc["accuracy"], doc["model"]
    acc = "–" if a["top1"] is None else f"{a['top1']:.4f} ({a['correct']}/{a['labelled']})"
    rows = [("model", m["name"]), ("checkpoint", m["checkpoint"] or "–"),
            ("data", f"{d['kind']}: {' '.join(d['spec'])}"),
            ("images", f"{d['n_images']} read, {d['n_bad']} could not be read"),
            ("output", NO_PREDICTION if m.get("output_kind") == NONE else
                       str(m.get("output_kind", CLASSIFIER))),
            ("top-1 accuracy", acc),
            ("run", f"{r['world_size']} process(es), {r['backend'] or 'no collectives'}, "
                    f"{r['device']}, {r['seconds']:.1f} s, {r['images_per_s']:.1f} images/s"),
            ("written", f"{doc['created']} by attnviz {doc['attnviz']}")]
    return _table(["", ""], rows, left=2)


def _problems(doc: dict) -> str:
    d = doc["data"]
    out = ""
    if d["n_bad"]:
        listed = f" (first {len(d['bad'])} listed)" if len(d["bad"]) < d["n_bad"] else ""
        out += (f"<h2>Could not read: {d['n_bad']}{listed}</h2>"
                + _table(["image", "reason"], [(b["image"], b["reason"]) for b in d["bad"]],
                         left=2))
    if d["skipped"]:
        out += ("<h2>Left out by the scan</h2>"
                + _table(["path", "reason"], d["skipped"], left=2))
    return out


def render(doc: dict[str, Any]) -> str:
    """The page for a decoded ``stats.json``."""
    by_kind: dict[str, list[dict]] = {}
    for layer in doc["layers"]:
        by_kind.setdefault(layer["kind"], []).append(layer)
    body = (_overview(doc) + _channel(by_kind.get("channel", []), doc)
            + _maps(by_kind.get("spatial", []) + by_kind.get("context", []))
            + _splits(by_kind.get("radix", []) + by_kind.get("paths", []), doc)
            + _attention(by_kind.get("attention", [])) + _gates(by_kind.get("gate", []))
            + _problems(doc))
    title = f"Attention statistics: {doc['model']['name']}"
    banner = ""
    if doc["model"].get("random_weights"):
        banner = (f"<div class='alarm' id='random-weights'><b>Random weights.</b> "
                  f"{_e(RANDOM_WEIGHTS)}.</div>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{banner}{body}"
            "</body></html>\n")


def write_html(stats_json: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Build the page from ``stats_json`` alone and write it (default: ``stats.html`` beside
    it), via a temporary file renamed into place."""
    doc = read_stats(stats_json)
    src = Path(stats_json)
    target = Path(out) if out is not None else (src if src.is_dir() else src.parent) / "stats.html"
    try:
        page = render(doc)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ParameterError(f"{os.fspath(stats_json)!r} is not a complete attnviz stats.json "
                             f"({type(e).__name__}: {one_line(e)}); write it again with "
                             "`attnviz stats`") from None
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
