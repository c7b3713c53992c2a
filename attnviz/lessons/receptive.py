"""How much of the image one cell of a CBAM spatial mask can see, for a k×k gate.

The mask A at a block is σ(conv_k×k([mean_c F; max_c F])): one cell sees a k×k window of the
feature map F, and each cell of F already sees a window of the image. The exact local window
is measured by back-propagation: with all convolution weights positive (float64), BatchNorm the
identity and the channel gates (global by construction: they pool the whole map) removed, the input
pixels with a non-zero gradient of the centre mask cell are exactly its receptive field.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import ChannelAttention, SpatialAttention


@dataclass
class ReceptiveField:
    """The centre cell of one layer's mask and the image window it sees."""

    layer: str
    kernel_size: int
    grid: tuple[int, int]  # mask height, width
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in input pixels

    @property
    def side(self) -> int:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def with_spatial_kernel(model: nn.Module, kernel_size: int) -> nn.Module:
    """A copy of ``model`` whose CBAM spatial gates use a ``kernel_size`` × ``kernel_size`` conv
    (new, untrained weights; same normalisation and bias settings)."""
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, SpatialAttention):
            new = SpatialAttention(kernel_size, norm=not isinstance(m.bn, nn.Identity),
                                   bias=m.conv.bias is not None)
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, child, new)
    return out.eval()


def _local_only(model: nn.Module) -> nn.Module:
    """Positive conv weights, identity BatchNorm, channel gates removed (see module doc)."""
    m = copy.deepcopy(model).eval().double()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, ChannelAttention):
            parent, _, child = name.rpartition(".")
            setattr(m.get_submodule(parent), child, nn.Identity())
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.constant_(mod.weight, 1.0 / mod.weight[0].numel())
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats()
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    for mod in m.modules():  # keep every gate's sigmoid in its steep range
        if isinstance(mod, SpatialAttention):
            mod.conv.weight.data.mul_(1e-3)
    return m


def receptive_fields(model: nn.Module, kernel_sizes: Sequence[int] = (3, 7), size: int = 64
                     ) -> list[ReceptiveField]:
    """The window of a ``size`` px input seen by the centre cell of every CBAM spatial mask of
    ``model``, for each gate kernel size."""
    out: list[ReceptiveField] = []
    for k in kernel_sizes:
        m = _local_only(with_spatial_kernel(model, k))
        masks: dict[str, torch.Tensor] = {}
        hooks = [mod.gate.register_forward_hook(
                     lambda _m, _i, a, name=name, masks=masks: masks.__setitem__(name, a))
                 for name, mod in m.named_modules() if isinstance(mod, SpatialAttention)]
        x = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
        try:
            m(x)
        finally:
            for h in hooks:
                h.remove()
        for name, a in masks.items():
            h, w = a.shape[-2:]
            (g,) = torch.autograd.grad(a[0, 0, h // 2, w // 2], x, retain_graph=True)
            ys, xs = torch.nonzero(g.abs().sum((0, 1)) > 0, as_tuple=True)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            out.append(ReceptiveField(name, k, (h, w), box))
    return out


def receptive_table(fields: Sequence[ReceptiveField]) -> str:
    """One line per layer: mask size and the side of the window one cell sees, per k."""
    ks = sorted({f.kernel_size for f in fields})
    by = {(f.layer, f.kernel_size): f for f in fields}
    layers = list(dict.fromkeys(f.layer for f in fields))
    lines = [f"{'layer':24s} {'mask':>6s} " + " ".join(f"{f'k={k}: px':>10s}" for k in ks)]
    for name in layers:
        h, w = by[name, ks[0]].grid
        lines.append(f"{name:24s} {f'{h}×{w}':>6s} "
                     + " ".join(f"{by[name, k].side:10d}" for k in ks))
    return "\n".join(lines)
