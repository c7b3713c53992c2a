"""Attention next to attribution: Captum maps and how well they agree with a spatial mask.

    maps = attribute(model, x, mask_layer="layer3.0.attn.spatial")   # {"gradcam", "ig", ...}
    with attnviz.record(model, layers="layer3.0.attn.spatial") as rec:
        model(x)
    agreement(rec.spatial["layer3.0.attn.spatial"], maps["ig"], objects)

Every map is a detached float32 CPU tensor of shape (B, h, w): Grad-CAM on the grid of its layer,
pixel methods (integrated gradients, saliency, occlusion) on the image grid. :func:`align`
resamples any of them to any grid.

In-place ops: Captum runs on a cached deep copy of the model in which every ``inplace`` attribute
(``nn.ReLU(inplace=True)``, timm's activations) is False and parameters do not require grad, so the
user's model is never modified or hooked. In-place code inside ``forward`` (timm's
``x += shortcut``) is not changed; Captum's layer hooks clone the layer output they hand on, so
Grad-CAM is exact there too (checked against a hand-written Grad-CAM in the tests).
"""
from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from .errors import ParameterError, require
from .models.preprocess import model_device
from .record import record

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


def _prepare(model: nn.Module, x: Tensor) -> tuple[nn.Module, Tensor]:
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ParameterError(f"x must be a (B, C, H, W) tensor, got {shape}")
    if model.training:
        warnings.warn("attribution on a model in train mode (BatchNorm uses batch statistics); "
                      "call model.eval() first", RuntimeWarning, stacklevel=3)
    twin = attribution_model(model)
    return twin, x.detach().to(model_device(twin), torch.float32)


def _target(twin: nn.Module, x: Tensor, target: Target) -> Tensor:
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
) -> Tensor:
    """Grad-CAM (Captum ``LayerGradCam``) at ``layer`` of ``model``: (B, h, w) on the layer grid.

    ``ReLU(Σ_c w_c A_c)`` with ``w_c`` the spatial mean of ∂logit/∂A_c, ``A`` the layer output.
    ``layer``: module name or module of ``model`` (see :func:`layer_for_mask`); ``target``: class
    index, (B,) tensor of classes, or None for the predicted class; ``relu=False`` keeps the
    negative part.
    """
    LayerGradCam = _captum_attr().LayerGradCam

    name = _layer_name(model, layer)
    twin, x = _prepare(model, x)
    t = _target(twin, x, target)
    cam = LayerGradCam(twin, twin.get_submodule(name))
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients from ``baseline`` (a value or tensor like ``x``) to ``x``.

    Returns (B, H, W): ``|attribution|`` summed over channels (``reduce="abs"``); ``"sum"`` keeps
    the sign, ``"none"`` returns (B, C, H, W). With ``return_delta`` also Captum's convergence
    delta (B,): Σ attributions − (f(x) − f(baseline)) for the target logit.
    ``internal_batch_size`` (path points per forward pass) is raised to B when smaller: Captum
    needs one point of every image per pass (and would warn, then do the same).
    """
    IntegratedGradients = _captum_attr().IntegratedGradients

    twin, x = _prepare(model, x)
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


def saliency(model: nn.Module, x: Tensor, target: Target = None, reduce: str = "abs") -> Tensor:
    """Gradient saliency ∂logit/∂x (Captum ``Saliency``): (B, H, W), |gradient| summed over
    channels (``reduce`` as in :func:`integrated_gradients`)."""
    Saliency = _captum_attr().Saliency

    twin, x = _prepare(model, x)
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
) -> Tensor:
    """Occlusion (Captum ``Occlusion``): drop of the target logit when a ``window``² patch (all
    channels) is set to ``baseline``, averaged over the windows covering each pixel.

    Returns (B, H, W), signed (positive = the patch supports the target); the value is the same
    in every channel, so the default ``reduce="mean"`` keeps logit units.
    """
    Occlusion = _captum_attr().Occlusion

    twin, x = _prepare(model, x)
    t = _target(twin, x, target)
    c = x.shape[1]
    with torch.no_grad():
        attr = Occlusion(twin).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=baseline, target=t, perturbations_per_eval=perturbations_per_eval,
        )
    return _reduce(attr, reduce)


def align(map: Tensor, size: int | Sequence[int]) -> Tensor:
    """Resample maps to ``size`` (an int or (h, w)): (h, w), (B, h, w) or (B, 1, h, w) in, same
    rank out, float32.

    Enlarging is bilinear (``align_corners=False``); shrinking averages the pixels under each
    target cell (``mode="area"``), so a 64×64 pixel map brought to an 8×8 mask grid gives each
    cell the mean attribution of its 8×8 pixel footprint (plain bilinear would sample 4 pixels).
    Mixed (one side up, one down) is bilinear with antialiasing.
    """
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2:
        raise ParameterError(f"size must be an int or (h, w), got {size}")
    if map.ndim not in (2, 3, 4) or (map.ndim == 4 and map.shape[1] != 1):
        raise ParameterError(
            f"map must be (h, w), (B, h, w) or (B, 1, h, w), got {tuple(map.shape)}"
        )
    x = map.detach().float()
    x4 = x.reshape(-1, 1, *x.shape[-2:])
    h, w = x4.shape[-2:]
    if (h, w) != size:
        if size[0] <= h and size[1] <= w:
            x4 = F.interpolate(x4, size=size, mode="area")
        else:
            shrink = size[0] < h or size[1] < w
            x4 = F.interpolate(x4, size=size, mode="bilinear", align_corners=False,
                               antialias=shrink)
    return x4.reshape(*x.shape[:-2], *size)


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
) -> dict[str, Tensor]:
    """Several attribution maps of the same batch: ``{method: (B, h, w)}``.

    ``methods``: from ``gradcam``, ``ig``, ``saliency``, ``occlusion``. Grad-CAM uses ``layer``,
    else the block of ``mask_layer`` (:func:`layer_for_mask`). ``target`` None → the predicted
    class, computed once. ``options``: keyword arguments per method, e.g. ``{"ig": {"n_steps":
    64}}``.
    """
    methods = [_method(m) for m in ([methods] if isinstance(methods, str) else methods)]
    options = dict(options or {})
    if "gradcam" in methods and layer is None:
        if mask_layer is None:
            raise ParameterError("gradcam needs mask_layer= (a spatial mask name) or layer=")
        layer = layer_for_mask(model, mask_layer)
    twin, xd = _prepare(model, x)
    t = _target(twin, xd, target)
    out: dict[str, Tensor] = {}
    for m in methods:
        kw = dict(options.get(m, {}))
        if m == "gradcam":
            out[m] = gradcam(model, xd, layer, t, **kw)  # type: ignore[arg-type]
        elif m == "ig":
            out[m] = integrated_gradients(model, xd, t, **kw)  # type: ignore[assignment]
        elif m == "saliency":
            out[m] = saliency(model, xd, t, **kw)
        else:
            out[m] = occlusion(model, xd, t, **kw)
    return out


# -- agreement -------------------------------------------------------------------------------------
def agreement(
    mask: Tensor,
    attr: Tensor,
    objects: Tensor | None = None,
    topk: float = 0.2,
    tolerance: int = 3,
) -> dict[str, Tensor]:
    """Per-image agreement of an attention mask (B, h, w) with an attribution map (B, h', w').

    The attribution is aligned to the mask grid (:func:`align`), then compared by Spearman rank
    correlation (``spearman``, tied values get their average rank) and the IoU of the top
    ``topk`` share of cells (``iou``). With ground-truth ``objects`` (B, S, S) bool, also the
    pointing game of each map at its own resolution (``pointing_attention``,
    ``pointing_attribution``: does the map's maximum fall on the object, grown by ``tolerance``
    px). Values are (B,) CPU tensors.
    """
    mask = mask.detach().float().cpu()
    if mask.ndim == 2:
        mask = mask[None]
    attr = attr.detach().float().cpu()
    if attr.ndim == 2:
        attr = attr[None]
    if mask.ndim != 3 or attr.ndim != 3 or mask.shape[0] != attr.shape[0]:
        raise ParameterError(
            f"mask and attr must be (B, h, w) with the same B, got {tuple(mask.shape)} and "
            f"{tuple(attr.shape)}"
        )
    aligned = align(attr, mask.shape[-2:])
    out = {
        "spearman": metrics.spearman_ties(mask, aligned),
        "iou": metrics.topk_iou(mask, aligned, topk),
    }
    if objects is not None:
        objects = objects.cpu().bool()
        if objects.ndim == 2:
            objects = objects[None]
        if objects.shape[0] != mask.shape[0]:
            raise ParameterError(f"objects must be (B, S, S) with B={mask.shape[0]}")
        out["pointing_attention"] = metrics.pointing_hits(mask, objects, tolerance)
        out["pointing_attribution"] = metrics.pointing_hits(attr, objects, tolerance)
    return out


def attention_mask(model: nn.Module, x: Tensor, mask_name: str) -> tuple[Tensor, Tensor]:
    """The model's own mask ``mask_name`` for ``x`` (via :func:`attnviz.record`) and the logits:
    ((B, h, w), (B, classes)) on the CPU."""
    device = model_device(model)
    with record(model, layers=mask_name) as rec:
        logits = rec(x.to(device, torch.float32))
        rec.cpu()
    for kind in ("spatial", "context"):
        found = rec.by_kind(kind)
        if mask_name in found:
            return found[mask_name], logits.cpu()
    names = [r.name for r in rec.records]
    raise ParameterError(f"{mask_name!r} is not a spatial attention module (recorded: {names})")


def agreement_table(
    model: nn.Module,
    images: Tensor,
    masks_gt: Tensor | None,
    mask_layer: str,
    methods: Iterable[str] = ("gradcam", "ig", "saliency"),
    batch_size: int = 8,
    topk: float = 0.2,
    target: Tensor | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Agreement of the attention mask ``mask_layer`` with each attribution method over a data set.

    ``images`` (N, 3, H, W); ``masks_gt`` (N, H, W) bool objects or None; ``target`` (N,) classes
    or None for the predicted ones. One row per method: ``method``, ``n``, ``spearman_mean``,
    ``spearman_std``, ``iou_mean``, ``pointing_attention``, ``pointing_attribution`` (None
    without ``masks_gt``), ``mask_layer``, ``topk``.
    """
    methods = [_method(m) for m in ([methods] if isinstance(methods, str) else methods)]
    n = images.shape[0]
    if masks_gt is not None and masks_gt.shape[0] != n:
        raise ParameterError(f"masks_gt has {masks_gt.shape[0]} images, images has {n}")
    per: dict[str, dict[str, list[Tensor]]] = {m: {} for m in methods}
    for i in range(0, n, batch_size):
        xb = images[i : i + batch_size]
        mask, logits = attention_mask(model, xb, mask_layer)
        tb = logits.argmax(1) if target is None else target[i : i + batch_size]
        maps = attribute(model, xb, methods, mask_layer=mask_layer, target=tb, options=options)
        ob = None if masks_gt is None else masks_gt[i : i + batch_size]
        for m, a in maps.items():
            for k, v in agreement(mask, a, ob, topk).items():
                per[m].setdefault(k, []).append(v)
    rows = []
    for m in methods:
        vals = {k: torch.cat(v).float() for k, v in per[m].items()}
        rho = vals["spearman"]
        rows.append({
            "method": m,
            "n": n,
            "spearman_mean": rho.mean().item(),
            "spearman_std": rho.std().item() if n > 1 else 0.0,
            "iou_mean": vals["iou"].mean().item(),
            "pointing_attention": vals["pointing_attention"].mean().item()
            if "pointing_attention" in vals else None,
            "pointing_attribution": vals["pointing_attribution"].mean().item()
            if "pointing_attribution" in vals else None,
            "mask_layer": mask_layer,
            "topk": topk,
        })
    return rows


def format_agreement(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`agreement_table` rows."""
    if not rows:
        return "(no rows)"

    def f(v: float | None) -> str:
        return "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"

    r0 = rows[0]
    k = round(100 * r0.get("topk", 0.2))
    lines = [
        f"attention {r0.get('mask_layer', '?')} vs attribution (n={r0.get('n', '?')})",
        f"{'method':10s} {'Spearman ρ':>16s} {f'top-{k}% IoU':>12s} {'point(attn)':>11s} "
        f"{'point(attr)':>11s}",
    ]
    for r in rows:
        rho = f"{r['spearman_mean']:6.3f} ± {r['spearman_std']:5.3f}"
        lines.append(
            f"{r['method']:10s} {rho:>16s} {f(r['iou_mean']):>12s} "
            f"{f(r.get('pointing_attention')):>11s} {f(r.get('pointing_attribution')):>11s}"
        )
    return "\n".join(lines)


__all__ = [
    "METHODS",
    "agreement",
    "agreement_table",
    "align",
    "attention_mask",
    "attribute",
    "attribution_model",
    "clear_cache",
    "format_agreement",
    "gradcam",
    "integrated_gradients",
    "layer_for_mask",
    "occlusion",
    "saliency",
]
