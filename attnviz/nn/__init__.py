"""Reference attention modules, one mechanism per file, and ``create_attn`` to build one by name.

Every weight a module multiplies by is the output of an activation submodule
(``gate``, ``rsoftmax`` or ``softmax``), so a forward hook sees exactly that weight.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..errors import ParameterError
from .cbam import CBAM
from .channel_attn import ChannelAttention
from .eca import ECA, eca_kernel_size
from .se import SqueezeExcite
from .self_attn import MultiHeadSelfAttention2d
from .spatial_attn import SpatialAttention
from .split_attn import RSoftmax, SplitAttention

_ATTN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite,
    "cbam": CBAM,
    "cbam_channel": ChannelAttention,
    "eca": ECA,
}


def create_attn(name: str | None, channels: int, **kwargs) -> nn.Module | None:
    """Build the channel-level attention module registered as ``name`` (None → no attention)."""
    if name is None or name == "none":
        return None
    try:
        factory = _ATTN_LAYERS[name]
    except KeyError:
        raise ParameterError(
            f"unknown attention layer {name!r}; choose one of {sorted(_ATTN_LAYERS)}"
        ) from None
    return factory(channels, **kwargs)


def get_attn(name: str | None, **kwargs) -> Callable[[int], nn.Module | None]:
    """A one-argument factory ``channels -> module`` for ``name`` with ``kwargs`` bound."""
    return partial(create_attn, name, **kwargs)


__all__ = [
    "CBAM",
    "ECA",
    "ChannelAttention",
    "MultiHeadSelfAttention2d",
    "RSoftmax",
    "SpatialAttention",
    "SplitAttention",
    "SqueezeExcite",
    "create_attn",
    "eca_kernel_size",
    "get_attn",
]
