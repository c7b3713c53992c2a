"""Figures of ``stats.html``, drawn from a decoded ``stats.json`` alone (no model, no data).

Every function takes parts of the document returned by :func:`attnviz.stats.read_stats` and
returns PNG bytes.
"""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ..vis import CELLS, DEFAULT_CMAP

MAX_PANELS = 6
MAX_LINES = 8
MAX_ROWS = 50


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _subplots(n: int, width: float, height: float, per_row: int = 3) -> tuple[Any, np.ndarray]:
    """A figure with ``n`` panels of ``width`` × ``height`` inches, ``per_row`` to a row;
    returns the used axes, flat."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = axes.reshape(-1)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def pick(n: int, k: int) -> list[int]:
    """Up to ``k`` of ``range(n)``, evenly spread, always with the last."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def top_classes(counts: np.ndarray, k: int) -> list[int]:
    """The ``k`` classes with most images (ties: lower index), in index order."""
    order = np.argsort(-counts, kind="stable")[:k]
    return sorted(int(i) for i in order if counts[i] > 0)


def excitation(layers: list[dict], names: list[str], counts: np.ndarray) -> bytes:
    """Mean s(c) per channel for the largest classes and for all images, in up to six
    channel layers from shallow to deep, as in Fig. 6 of the SE paper."""
    shown = [layers[i] for i in pick(len(layers), MAX_PANELS)]
    classes = top_classes(counts, MAX_LINES)
    fig, axes = _subplots(len(shown), 4.2, 3.0)
    for ax, layer in zip(axes, shown, strict=True):
        s = layer["moments"]["s"]
        x = np.arange(s["mean"].shape[1])
        for k in classes:
            ax.plot(x, s["mean"][k], lw=0.9, label=names[k])
        total = s["total"]["mean"][0] if "total" in s else s["mean"][0]
        ax.plot(x, total, "k--", lw=1.1, label="all")
        ax.set_ylim(0, 1)
        ax.set_title(layer["key"], fontsize=9)
        ax.set_xlabel("channel index", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[::3]:
        ax.set_ylabel("mean s(c)", fontsize=8)
    axes[min(2, len(axes) - 1)].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return _png(fig)


def mask(layer: dict) -> bytes:
    """Mean mask (fixed 0–1 scale) and where the masks peak (share of images per cell)."""
    fig, (a, b) = _subplots(2, 2.8, 2.6)
    mean = layer["moments"]["mask"]["mean"][0]
    im = a.imshow(mean, vmin=0, vmax=1, cmap=DEFAULT_CMAP, interpolation=CELLS)
    a.set_title("mean mask (0–1)", fontsize=8)
    fig.colorbar(im, ax=a, fraction=0.046)
    hist = layer["sums"]["peak_hist"]
    share = hist / max(float(hist.sum()), 1.0)
    im2 = b.imshow(share, cmap="magma", vmin=0)
    b.set_title("peak position (share of images)", fontsize=8)
    fig.colorbar(im2, ax=b, fraction=0.046)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(layer["key"], fontsize=9)
    return _png(fig)


def split(layer: dict, names: list[str], counts: np.ndarray) -> bytes:
    """Mean weight of split 0 per class (rows) and channel (columns), on a 0–1 scale."""
    w = layer["moments"]["weights"]["mean"]  # (K, R, C)
    rows = top_classes(counts, MAX_ROWS)
    fig, (ax,) = _subplots(1, 6.0, 0.8 + 0.22 * max(len(rows), 1))
    im = ax.imshow(w[rows, 0, :] if rows else np.zeros((1, w.shape[2])), vmin=0, vmax=1,
                   cmap="coolwarm", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)), [names[k] for k in rows], fontsize=7)
    ax.set_xlabel("channel index", fontsize=8)
    ax.set_title(f"{layer['key']}: mean a₀ per class (0.5 = even split for R = 2)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _png(fig)
