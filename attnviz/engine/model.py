"""The model of a run: built once, its weights checked, its output interpreted.

One loader for every command (``report``, ``stats``, ``evaluate``): a timm name without a
checkpoint means its pretrained weights, an attnviz architecture without a checkpoint has random
weights and is refused unless ``random_weights=True`` (``--random-weights``), in which case the
pages say so at the top.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ParameterError
from ..models import DEMO_MODELS, load_model
from ..models.preprocess import input_spec, model_device
from ..models.registry import is_model
from ..models.user import is_user_spec
from ..outputs import Output, OutputSelector, call_model, interpret
from ..record import record

#: the banner of pages and explorers showing a model with random weights
RANDOM_WEIGHTS = ("random weights: this model was not trained (no checkpoint), so its attention "
                  "shows the architecture at initialisation, not anything learned")


def is_random(model: nn.Module) -> bool:
    """Whether ``model`` has the random weights of its initialisation (as built by
    :func:`attnviz.load_model` without weights)."""
    return bool(getattr(model, "attnviz_random_weights", False))


def random_weights_note(model: nn.Module) -> str | None:
    """The banner text for ``model`` (None when it has trained weights)."""
    return RANDOM_WEIGHTS if is_random(model) else None


def load_for_run(model: str | nn.Module, device: str | torch.device = "auto", *,
                 random_weights: bool = False, **options: Any) -> tuple[nn.Module, str]:
    """The model of a run in eval mode on ``device``, and its name.

    Args:
        model: anything ``--model`` accepts, or an ``nn.Module`` (used as it is).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        random_weights: allow an architecture without weights (``--random-weights``); a timm
            name then gets random weights instead of its pretrained ones.
        options: :func:`attnviz.load_model` keywords (``checkpoint``, ``input_size``, ...).

    Returns:
        ``(model, name)``.

    Raises:
        ParameterError: an attnviz architecture without checkpoint and without
            ``random_weights``; a checkpoint that is not a file.
    """
    from ..models import resolve_device

    if isinstance(model, nn.Module):
        dev = resolve_device(device)
        return model.to(dev).eval(), type(model).__name__
    if not isinstance(model, str) or not model:
        raise ParameterError(f"model must be a model name or an nn.Module, got {model!r}")
    ckpt = options.get("checkpoint")
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        raise ParameterError(f"checkpoint {os.fspath(ckpt)!r} is not a file")
    named_weights = model in DEMO_MODELS or is_user_spec(model)
    if ckpt is None and not named_weights and is_model(model) and not random_weights:
        raise ParameterError(
            f"{model!r} is an attnviz architecture without weights: its attention would be that "
            "of random initialisation. Pass --checkpoint PATH (trained weights), use a demo "
            "model (demo-cbam, demo-se, ...) or a timm name (ImageNet weights), or pass "
            "--random-weights to look at random-init attention on purpose")
    pretrained = ckpt is None and not named_weights and not is_model(model) and not random_weights
    net = load_model(model, pretrained=pretrained, device=device, **options)
    return net.eval(), model


def forward(net: nn.Module, x: Tensor, output: Any = None, amp: bool = False) -> Output:
    """One batch through ``net`` (``pixel_values=`` where its forward asks for it), under
    autocast when ``amp`` (fp16 on CUDA, bf16 on CPU), interpreted by
    :func:`attnviz.outputs.interpret`. Call it inside :func:`attnviz.record` to record."""
    dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
    with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
        raw = call_model(net, x)
    return interpret(raw, x.shape[0], output)


def probe(net: nn.Module, layers: str | None = None, output: Any = None) -> Output:
    """One watched forward pass of a blank image: raises NoAttentionError when ``net`` (or
    ``layers``) has no attention, ParameterError when ``output`` does not fit; returns what the
    output means (its kind and number of classes)."""
    size = input_spec(net).size
    x = torch.zeros(1, 3, size, size, device=model_device(net))
    sel = OutputSelector.parse(output)
    with torch.no_grad(), record(net, layers=layers):
        return forward(net, x, sel)


__all__ = ["RANDOM_WEIGHTS", "forward", "is_random", "load_for_run", "probe",
           "random_weights_note"]
