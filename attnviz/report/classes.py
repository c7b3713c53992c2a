"""How each predicted class's channel weights deviate from the mean over all images.

For every block with channel weights s(c) (kinds drawn as ``"bars"`` in :mod:`attnviz.kinds`)
and every predicted class with at least :data:`MIN_CLASS_IMAGES` images, when the images are
predicted as at least two different classes::

    Δ_k(c) = mean of s(c) over the images predicted as class k − mean of s(c) over all images
    sd(c)  = standard deviation of s(c) over all images (population: ÷ n)

"All images" are those with a class prediction (finite scores) and finite s(c) in the block.
Sums are accumulated batch by batch in float64 (:class:`ClassChannels`), so every analysed
image counts, not only those with figures; the predicted class is the argmax of the per-image
scores, as in the report's predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..outputs import class_name

#: a predicted class is compared with all images when it has at least this many images
MIN_CLASS_IMAGES = 2
#: the rule, as the report page states it
RULE = (f"each predicted class with at least {MIN_CLASS_IMAGES} images, when the images are "
        "predicted as at least two different classes (otherwise every class mean is the mean "
        "over all images)")
#: Δ/sd is not given (None) where sd(c) is at most this: a channel that hardly varies
MIN_SD = 1e-6


def predicted_classes(scores: Tensor) -> Tensor:
    """(N,) the predicted class of each row of the per-image scores: the argmax, -1 where a
    row holds a NaN or infinite value (or there are no classes)."""
    if scores.ndim != 2 or scores.shape[1] == 0:
        return torch.full((scores.shape[0],), -1, dtype=torch.long)
    finite = torch.isfinite(scores).all(1)
    return torch.where(finite, scores.argmax(1), torch.full_like(finite, -1, dtype=torch.long))


class ClassChannels:
    """Running per-class sums of channel weights: for each block, the count, sum and sum of
    squares of s(c) over all images, and the count and sum per predicted class (float64, one
    ``index_add_`` per batch)."""

    def __init__(self) -> None:
        #: block -> (images, Σ s(c) (C,), Σ s(c)² (C,), images per class (K,), Σ s(c) per class
        #: (K, C))
        self.sums: dict[str, tuple[int, Tensor, Tensor, Tensor, Tensor]] = {}

    def add(self, key: str, value: Tensor, classes: Tensor, num_classes: int) -> None:
        """Images of block ``key``: ``value`` (N, C, ...) s(c), ``classes`` (N,) predicted
        classes in ``[0, num_classes)`` (-1: none). Images without a class or with a non-finite
        s(c) are left out."""
        v = value.detach().cpu().reshape(value.shape[0], -1).double()
        ok = (classes >= 0) & torch.isfinite(v).all(1)
        if not bool(ok.all()):
            v, classes = v[ok], classes[ok]
        if not v.shape[0]:
            return
        c = v.shape[1]
        n, s, s2, counts, per = self.sums.get(key) or (
            0, v.new_zeros(c), v.new_zeros(c), torch.zeros(num_classes, dtype=torch.long),
            v.new_zeros(num_classes, c))
        s += v.sum(0)
        s2 += (v * v).sum(0)
        counts.index_add_(0, classes, torch.ones_like(classes))
        per.index_add_(0, classes, v)
        self.sums[key] = (n + v.shape[0], s, s2, counts, per)

    def deviations(self, names: Sequence[str] | None, top_k: int) -> list[dict[str, Any]]:
        """Per block (in the order first seen), the classes that pass :data:`RULE`::

            {"layer", "images", "mean" (C), "sd" (C), "classes": [{"class_index", "label",
             "images", "deviation" (C), "largest": [{"channel", "deviation", "in_sd"}]}]}

        ``largest``: the ``top_k`` channels with the largest |Δ|, ``in_sd`` = Δ / sd(c) (None
        where sd(c) ≤ :data:`MIN_SD`). ``names``: class names by index (None: ``class k``).
        Empty when no block qualifies."""
        out = []
        for key, (n, s, s2, counts, per) in self.sums.items():
            present = counts.nonzero().flatten().tolist()
            if len(present) < 2:
                continue
            mean = s / n
            sd = (s2 / n - mean * mean).clamp_min(0).sqrt()
            sds = sd.tolist()
            classes = []
            for k in present:
                m, t = int(counts[k]), per[k]
                if m < MIN_CLASS_IMAGES:
                    continue
                dev = t / m - mean
                order = torch.argsort(-dev.abs(), stable=True)[:top_k].tolist()
                devs, in_sd = dev.tolist(), (dev / sd).tolist()
                classes.append({
                    "class_index": k, "label": class_name(names, k),
                    "images": m, "deviation": devs,
                    "largest": [{"channel": c, "deviation": devs[c],
                                 "in_sd": in_sd[c] if sds[c] > MIN_SD else None}
                                for c in order]})
            if classes:
                out.append({"layer": key, "images": n, "mean": mean.tolist(),
                            "sd": sd.tolist(), "classes": classes})
        return out


__all__ = ["MIN_CLASS_IMAGES", "MIN_SD", "RULE", "ClassChannels", "predicted_classes"]
