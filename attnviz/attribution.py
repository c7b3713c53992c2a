"""Attention next to attribution: Captum maps and how well they agree with a spatial mask.

    maps = attribute(model, x, mask_layer="layer3.0.attn.spatial")   # {"gradcam", "ig", ...}
    with attnviz.record(model, layers="layer3.0.attn.spatial") as rec:
        model(x)
    agreement(rec.spatial["layer3.0.attn.spatial"], maps["ig"], objects)

Every map is a detached float32 CPU tensor of shape (B, h, w): Grad-CAM on the grid of its layer,
pixel methods (integrated gradients, saliency, occlusion) on the image grid.
:mod:`attnviz.agreement` aligns them to a
mask grid and scores how well they agree.

In-place ops: Captum runs on a cached deep copy of the model in which every ``inplace`` attribute
(``nn.ReLU(inplace=True)``, timm's activations) is False and parameters do not require grad, so the
user's model is never modified or hooked. In-place code inside ``forward`` (timm's
``x += shortcut``) is not changed; Captum's layer hooks clone the layer output they hand on, so
Grad-CAM is exact there too (checked against a hand-written Grad-CAM in the tests).
"""
from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ParameterError, require
from .models.preprocess import model_device
from .outputs import OutputSelector, call_model, class_scores

Target = int | Tensor | None

METHODS = ("gradcam", "ig", "saliency", "occlusion")
_ALIASES = {"integrated_gradients": "ig", "grad_cam": "gradcam"}
_REDUCE = ("abs", "sum", "mean", "none")


def _captum_attr() -> Any:
    """``captum.attr``; a one-line MissingDependencyError when Captum is not installed."""
    require("captum", extra="attribution", feature="attnviz.attribution")
    import captum.attr

    return captum.attr


# -- the model Captum runs on ---------------------------------------------------------------------
_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _signature(model: nn.Module) -> tuple:
    """Changes whenever a parameter/buffer is replaced, moved or modified in place."""
    tensors = chain(model.parameters(), model.buffers())
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for t in tensors
    ) + (len(list(model.modules())),)


def _strip_recording_hooks(module: nn.Module) -> None:
    # Deep copies keep the hook dicts with the same functions; an active attnviz recorder (or a
    # leftover Captum hook) must not fire on the copy. Other hooks (e.g. weight norm) stay.
    for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks"):
        hooks = getattr(module, attr, None)
        if not hooks:
            continue
        for key, fn in list(hooks.items()):
            owner = getattr(fn, "__module__", "") or ""
            if owner.startswith(("attnviz.record", "captum")):
                del hooks[key]


def attribution_model(model: nn.Module) -> nn.Module:
    """The model Captum runs on: a cached deep copy with no in-place ops and frozen parameters.

    The copy is cached per model (weakly) and rebuilt when any parameter or buffer of ``model``
    is replaced or modified in place (optimizer steps, ``load_state_dict``, ``.to(device)``);
    its train/eval flags are synced to the model's on every call. It holds a second set of
    weights on the model's device; :func:`clear_cache` frees it. If the model cannot be deep
    copied, the model itself is used (Captum then runs on it; its hooks are removed afterwards).
    """
    sig = _signature(model)
    cached = _COPIES.get(model)
    if cached is not None and cached[0] == sig:
        twin = cached[1]
    else:
        try:
            twin = copy.deepcopy(model)
        except Exception as exc:  # noqa: BLE001 - e.g. non-leaf tensors, compiled modules
            warnings.warn(
                f"attnviz.attribution: cannot deep-copy {type(model).__name__} ({exc}); running "
                "Captum on the model itself", RuntimeWarning, stacklevel=3,
            )
            return model
        for m in twin.modules():
            if hasattr(m, "inplace") and isinstance(m.inplace, bool):
                m.inplace = False
            _strip_recording_hooks(m)
        for p in twin.parameters():
            p.requires_grad_(False)  # gradients w.r.t. inputs only: skips weight gradients
        _COPIES[model] = (sig, twin)
    for m, t in zip(model.modules(), twin.modules(), strict=True):
        t.training = m.training
    return twin


def clear_cache() -> None:
    """Forget every cached model copy (see :func:`attribution_model`)."""
    _COPIES.clear()


class Scores:
    """Captum's forward function: the model's (B, classes) class scores
    (:func:`attnviz.outputs.class_scores`: a classifier's logits; for a dense prediction, each
    class's logit summed over its predicted region), whatever the model returns."""

    def __init__(self, twin: nn.Module, output: Any = None, top: bool = False) -> None:
        self.twin, self.output, self.top = twin, OutputSelector.parse(output), top

    def __call__(self, x: Tensor) -> Tensor:
        scores = class_scores(call_model(self.twin, x), x.shape[0], self.output)
        if self.top:  # (B, 1): the predicted class's score, picked in the same forward pass
            return scores.gather(1, scores.detach().argmax(1, keepdim=True))
        return scores

    def predicted(self) -> Scores:
        """The same scores reduced to the predicted class's (target 0): the forward that picks
        the class is the one the gradient flows through (no second forward pass)."""
        return Scores(self.twin, self.output, top=True)


def _prepare(model: nn.Module, x: Tensor, output: Any = None) -> tuple[Scores, Tensor]:
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ParameterError(f"x must be a (B, C, H, W) tensor, got {shape}")
    if model.training:
        warnings.warn("attribution on a model in train mode (BatchNorm uses batch statistics); "
                      "call model.eval() first", RuntimeWarning, stacklevel=3)
    twin = attribution_model(model)
    return Scores(twin, output), x.detach().to(model_device(twin), torch.float32)


def _target(twin: Scores, x: Tensor, target: Target) -> Tensor:
    """Target class per image, shape (B,): the predicted class when ``target`` is None."""
    b = x.shape[0]
    if target is None:
        with torch.no_grad():
            return twin(x).argmax(1)
    if isinstance(target, int):
        return torch.full((b,), target, dtype=torch.long, device=x.device)
    if isinstance(target, Tensor):
        t = target.to(x.device, torch.long).reshape(-1)
        if t.numel() == 1:
            return t.expand(b).contiguous()
        if t.numel() == b:
            return t
    raise ParameterError(f"target must be None, an int or a ({b},) tensor, got {target!r}")


def _reduce(attr: Tensor, reduce: str) -> Tensor:
    if reduce == "abs":
        out = attr.abs().sum(1)
    elif reduce == "sum":
        out = attr.sum(1)
    elif reduce == "mean":
        out = attr.mean(1)
    elif reduce == "none":
        out = attr
    else:
        raise ParameterError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
    return out.detach().float().cpu()


# -- layers --------------------------------------------------------------------------------------
def layer_for_mask(model: nn.Module, mask_name: str) -> str:
    """The module Grad-CAM should use to compare with the spatial mask ``mask_name``.

    Rule: the nearest enclosing module whose name ends in a block index, i.e. the residual block
    holding the attention (``layer3.0.attn.spatial`` → ``layer3.0``; timm
    ``stages.2.blocks.1.attn.spatial`` → ``stages.2.blocks.1``). In a ResNet block the mask is
    applied at the block's output resolution, so the block output has the mask's grid. The block
    output (after the residual add and activation) is the standard Grad-CAM site; the attention
    module's own output ``F × A`` would be multiplied by the mask itself and make the comparison
    circular. Pass ``layer=`` to :func:`gradcam` to choose another module.
    """
    names = dict(model.named_modules())
    if mask_name not in names or not mask_name:
        raise ParameterError(f"{type(model).__name__} has no module named {mask_name!r}")
    parts = mask_name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        if parts[k - 1].isdigit():
            return ".".join(parts[:k])
    raise ParameterError(
        f"cannot tell which block holds {mask_name!r} (no enclosing module named by an index); "
        "pass the Grad-CAM layer explicitly (layer=...)"
    )


def _layer_name(model: nn.Module, layer: str | nn.Module) -> str:
    if isinstance(layer, str):
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise ParameterError(f"{type(model).__name__} has no module named {layer!r}") from None
        return layer
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name
        raise ParameterError(f"{type(layer).__name__} module is not part of the model")
    raise ParameterError(f"layer must be a module name or nn.Module, got {type(layer).__name__}")


# -- methods ---------------------------------------------------------------------------------------
def gradcam(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    target: Target = None,
    relu: bool = True,
    output: Any = None,
) -> Tensor:
    """Grad-CAM (Captum ``LayerGradCam``) at ``layer`` of ``model``: (B, h, w) on the layer grid.

    ``ReLU(Σ_c w_c A_c)`` with ``w_c`` the spatial mean of ∂logit/∂A_c, ``A`` the layer output.
    ``layer``: module name or module of ``model`` (see :func:`layer_for_mask`); ``target``: class
    index, (B,) tensor of classes, or None for the predicted class; ``relu=False`` keeps the
    negative part.
    """
    LayerGradCam = _captum_attr().LayerGradCam

    name = _layer_name(model, layer)
    twin, x = _prepare(model, x, output)
    if target is None:  # one forward pass picks the class and feeds the backward
        twin, t = twin.predicted(), torch.zeros(len(x), dtype=torch.long, device=x.device)
    else:
        t = _target(twin, x, target)
    cam = LayerGradCam(twin, twin.twin.get_submodule(name))
    out = cam.attribute(x, target=t, relu_attributions=relu)
    if out.ndim != 4:
        raise ParameterError(f"layer {name!r} output is not a (B, C, h, w) feature map")
    return out[:, 0].detach().float().cpu()


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    n_steps: int = 32,
    internal_batch_size: int = 16,
    baseline: float | Tensor = 0.0,
    reduce: str = "abs",
    return_delta: bool = False,
    output: Any = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients from ``baseline`` (a value or tensor like ``x``) to ``x``.

    Returns (B, H, W): ``|attribution|`` summed over channels (``reduce="abs"``); ``"sum"`` keeps
    the sign, ``"none"`` returns (B, C, H, W). With ``return_delta`` also Captum's convergence
    delta (B,): Σ attributions − (f(x) − f(baseline)) for the target logit.
    ``internal_batch_size`` (path points per forward pass) is raised to B when smaller: Captum
    needs one point of every image per pass (and would warn, then do the same).
    """
    IntegratedGradients = _captum_attr().IntegratedGradients

    twin, x = _prepare(model, x, output)
    t = _target(twin, x, target)
    base = baseline.to(x) if isinstance(baseline, Tensor) else float(baseline)
    out = IntegratedGradients(twin).attribute(
        x, baselines=base, target=t, n_steps=n_steps,
        internal_batch_size=max(internal_batch_size, len(x)),
        return_convergence_delta=return_delta,
    )
    if return_delta:
        attr, delta = out
        return _reduce(attr, reduce), delta.detach().float().cpu()
    return _reduce(out, reduce)


def saliency(model: nn.Module, x: Tensor, target: Target = None, reduce: str = "abs",
             output: Any = None) -> Tensor:
    """Gradient saliency ∂logit/∂x (Captum ``Saliency``): (B, H, W), |gradient| summed over
    channels (``reduce`` as in :func:`integrated_gradients`)."""
    Saliency = _captum_attr().Saliency

    twin, x = _prepare(model, x, output)
    if target is None:  # one forward pass picks the class and feeds the backward
        twin, t = twin.predicted(), torch.zeros(len(x), dtype=torch.long, device=x.device)
    else:
        t = _target(twin, x, target)
    x = x.clone().requires_grad_(True)
    return _reduce(Saliency(twin).attribute(x, target=t, abs=False), reduce)


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    window: int = 8,
    stride: int = 4,
    baseline: float = 0.0,
    perturbations_per_eval: int = 16,
    reduce: str = "mean",
    output: Any = None,
) -> Tensor:
    """Occlusion (Captum ``Occlusion``): drop of the target logit when a ``window``² patch (all
    channels) is set to ``baseline``, averaged over the windows covering each pixel.

    Returns (B, H, W), signed (positive = the patch supports the target); the value is the same
    in every channel, so the default ``reduce="mean"`` keeps logit units.
    """
    Occlusion = _captum_attr().Occlusion

    twin, x = _prepare(model, x, output)
    t = _target(twin, x, target)
    c = x.shape[1]
    with torch.no_grad():
        attr = Occlusion(twin).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=baseline, target=t, perturbations_per_eval=perturbations_per_eval,
        )
    return _reduce(attr, reduce)


def _method(name: str) -> str:
    m = _ALIASES.get(name, name)
    if m not in METHODS:
        raise ParameterError(f"unknown attribution method {name!r}; choose from {METHODS}")
    return m


def attribute(
    model: nn.Module,
    x: Tensor,
    methods: Iterable[str] = ("gradcam", "ig", "saliency"),
    mask_layer: str | None = None,
    target: Target = None,
    layer: str | nn.Module | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    output: Any = None,
) -> dict[str, Tensor]:
    """Several attribution maps of the same batch: ``{method: (B, h, w)}``.

    ``methods``: from ``gradcam``, ``ig``, ``saliency``, ``occlusion``. Grad-CAM uses ``layer``,
    else the block of ``mask_layer`` (:func:`layer_for_mask`). ``target`` None → the predicted
    class, computed once. ``options``: keyword arguments per method, e.g. ``{"ig": {"n_steps":
    64}}``. ``output``: which part of the model's output holds the logits (see
    :func:`attnviz.outputs.interpret`); a dense prediction's target is the summed score of a
    class over its predicted region; a model without class prediction is a ParameterError.
    """
    methods = [_method(m) for m in ([methods] if isinstance(methods, str) else methods)]
    options = dict(options or {})
    if "gradcam" in methods and layer is None:
        if mask_layer is None:
            raise ParameterError("gradcam needs mask_layer= (a spatial mask name) or layer=")
        layer = layer_for_mask(model, mask_layer)
    twin, xd = _prepare(model, x, output)
    # integrated gradients and occlusion need the class fixed first; Grad-CAM and saliency alone
    # pick it inside their own forward pass
    t = _target(twin, xd, target) if target is not None or set(methods) - {
        "gradcam", "saliency"} else None
    out: dict[str, Tensor] = {}
    for m in methods:
        kw = dict(options.get(m, {}))
        if m == "gradcam":
            out[m] = gradcam(model, xd, layer, t, output=output, **kw)  # type: ignore[arg-type]
        elif m == "ig":
            out[m] = integrated_gradients(model, xd, t, output=output, **kw)  # type: ignore[assignment]
        elif m == "saliency":
            out[m] = saliency(model, xd, t, output=output, **kw)
        else:
            out[m] = occlusion(model, xd, t, output=output, **kw)
    return out


__all__ = [
    "METHODS",
    "attribute",
    "attribution_model",
    "clear_cache",
    "gradcam",
    "integrated_gradients",
    "layer_for_mask",
    "occlusion",
    "saliency",
]
