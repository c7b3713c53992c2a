"""What a model expects as input: size and normalisation, from the model itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .resnet import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """Square input side and the normalisation to apply outside the model (None: inside)."""

    size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


#: what ``load_model(..., input_size=, mean=, std=)`` and ``--input-size/--mean/--std`` set
Preprocess = InputSpec


def set_preprocess(model: nn.Module, size: int | None = None,
                   mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None, *,
                   normalize: bool | None = None) -> InputSpec:
    """Override the input side and normalisation of ``model`` (unset parts keep their default).

    ``normalize=False``: the model takes [0, 1] images as they are (what
    :func:`attnviz.train.fit` trains with); ``True`` with no mean / std: ImageNet's."""
    base = input_spec(model)
    spec = InputSpec(int(size) if size is not None else base.size,
                     tuple(mean) if mean is not None else base.mean,
                     tuple(std) if std is not None else base.std)
    if normalize is False:
        spec = InputSpec(spec.size, None, None)
    elif (spec.mean is None) != (spec.std is None) or (normalize and spec.mean is None):
        spec = InputSpec(spec.size, spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD)
    model.attnviz_input = spec  # type: ignore[attr-defined]
    return spec


def input_spec(model: nn.Module) -> InputSpec:
    """What :func:`set_preprocess` set; else attnviz models with a ``Normalize`` inside take
    [0, 1] images; timm models follow their ``pretrained_cfg``; anything else gets 224 px and
    ImageNet statistics."""
    own = getattr(model, "attnviz_input", None)
    if isinstance(own, InputSpec):
        return own
    size = getattr(model, "input_size", None)
    if isinstance(getattr(model, "normalize", None), Normalize):
        return InputSpec(int(size or 64), None, None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg:
        return InputSpec(
            int(size or cfg.get("input_size", (3, 224, 224))[-1]),
            tuple(cfg.get("mean", IMAGENET_MEAN)),
            tuple(cfg.get("std", IMAGENET_STD)),
        )
    return InputSpec(int(size or 224), IMAGENET_MEAN, IMAGENET_STD)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) [0, 1] images → side ``size``, float32: bilinear with
    antialiasing. The one resize of model inputs (reports, stats, explorers, ``prepare``)."""
    if tuple(image.shape[-2:]) == (size, size):
        return image if image.dtype == torch.float32 else image.float()
    batch = image[None] if image.ndim == 3 else image
    out = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0] if image.ndim == 3 else out


def normalize(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A batch of [0, 1] images of the model's size → normalised as ``model`` expects (on the
    device of ``x``)."""
    spec = input_spec(model)
    if spec.mean is None or spec.std is None:
        return x
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def prepare(model: nn.Module, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """[0, 1] images ((3,H,W), a list of them, or (B,3,H,W)) → the batch ``model`` expects,
    on the model's device: :func:`resize`, then :func:`normalize`."""
    size = input_spec(model).size
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = [images]
    x = torch.stack([resize(im, size) for im in images])
    return normalize(model, x.to(model_device(model)))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU when it has neither)."""
    t = next(chain(model.parameters(), model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def check_class_names(model: nn.Module, outputs: int) -> None:
    """Refuse class names (``--labels``, a checkpoint's class list, ``model.class_names``)
    whose count differs from the model's ``outputs``: every name would be shown against the
    wrong output.

    Args:
        model: the model, with its ``class_names`` when it has any.
        outputs: the number of outputs (logits) one image gives.
    """
    names = getattr(model, "class_names", None)
    if names and len(names) != outputs:
        raise ParameterError(
            f"{len(names)} class names (from --labels or the checkpoint) for a model with "
            f"{outputs} outputs; give exactly one name per output")


def class_names(model: nn.Module) -> list[str] | None:
    """Class names for the model's outputs: the demo card's, or ImageNet's for 1000 classes."""
    names = getattr(model, "class_names", None)
    if names:
        return list(names)
    if getattr(model, "num_classes", None) == 1000:
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            return [info.index_to_description(i) for i in range(1000)]
        except Exception:
            return None
    return None
