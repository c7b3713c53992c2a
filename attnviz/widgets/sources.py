"""The explorer's images: bundled samples, your files and tensors, and uploads.

Every image is known by a *content digest*, never by its name: an upload named like an earlier
one (phones call every photo ``image.jpg``) or like a bundled sample gets its own entry and its
own analysis. Images are downscaled once, on arrival, to at most ``side`` pixels on their long
side (display and analysis need no more), and at most ``max_uploads`` uploads are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError, ParameterError
from ..images import MAX_BYTES, check_upload, load_image, load_pil, over_limit
from ..models.preprocess import resize
from ..resources import data_dir

DISPLAY_SIDE = 512  # long side kept for display and analysis (at least twice the model input)
MAX_UPLOADS = 8  # uploads kept; the oldest is dropped beyond this


@dataclass
class ImageEntry:
    """One image of the explorer: what the dropdown shows and where the pixels come from."""

    label: str
    source: object  # a path, a (3, H, W) tensor in [0, 1] or a PIL image
    origin: str  # "shapes" / "photo" (bundled samples), "upload", "yours"
    digest: str = ""  # content digest; for paths computed from path, size and mtime


def _tensor_digest(t: torch.Tensor) -> str:
    a = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def _path_digest(path: Path) -> str:
    try:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        key = str(path)  # load() reports the problem
    return hashlib.sha256(key.encode()).hexdigest()


def _origin(path: Path) -> str:
    """``"shapes"`` / ``"photo"`` for the bundled samples, ``"yours"`` otherwise."""
    try:
        bundled = path.resolve().parent == (data_dir() / "images").resolve()
    except OSError:
        bundled = False
    if not bundled:
        return "yours"
    return "shapes" if path.name.startswith("shapes_") else "photo"


def pil_to_tensor(img: Image.Image, side: int) -> torch.Tensor:
    """An RGB PIL image, shrunk to at most ``side`` px on its long side, as (3, H, W) in [0, 1]."""
    if max(img.size) > side:
        img = img.copy()
        img.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def fit(image: torch.Tensor, side: int) -> torch.Tensor:
    """A (3, H, W) tensor shrunk (antialiased) to at most ``side`` px on its long side."""
    h, w = image.shape[-2:]
    if max(h, w) <= side:
        return image
    s = side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0]


def _as_images(images: object) -> dict[str, object]:
    """``{label: source}`` from paths, tensors, a dict, or None (the bundled samples)."""
    if images is None:
        from ..samples import sample_images

        images = sample_images()
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, (str, Path, torch.Tensor)):
        images = [images]
    if isinstance(images, Mapping):
        return dict(images)
    out: dict[str, object] = {}
    for i, im in enumerate(images):  # type: ignore[union-attr]
        key = Path(im).name if isinstance(im, (str, Path)) else f"image {i}"
        out[key] = im
    if not out:
        raise ParameterError("AttentionExplorer needs at least one image")
    return out


class ImageStore:
    """Labels → images; uploads deduplicated by content and bounded in number."""

    def __init__(self, images: object, side: int = DISPLAY_SIDE,
                 max_uploads: int = MAX_UPLOADS) -> None:
        self.side, self.max_uploads = side, max_uploads
        self._entries: dict[str, ImageEntry] = {}
        for label, src in _as_images(images).items():
            self.add(label, src)

    @property
    def labels(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, label: str) -> ImageEntry:
        return self._entries[label]

    def __contains__(self, label: object) -> bool:
        return label in self._entries

    def digest(self, label: str) -> str:
        """The content digest of ``label`` (what analyses are cached by)."""
        e = self._entries[label]
        return e.digest or _path_digest(Path(e.source))  # type: ignore[arg-type]

    def load(self, label: str) -> torch.Tensor:
        """The image of ``label`` as (3, H, W) in [0, 1], at most ``side`` px on its long side."""
        src = self._entries[label].source
        if isinstance(src, torch.Tensor):
            return fit(src.detach().float().cpu(), self.side)
        return pil_to_tensor(load_pil(src, name=label), self.side)  # type: ignore[arg-type]

    def model_input(self, label: str, size: int) -> torch.Tensor:
        """The image of ``label`` as the model sees it: (3, size, size) in [0, 1], resized from
        the full image (not the shown one) by :func:`attnviz.models.preprocess.resize`, as
        ``attnviz report`` and ``attnviz stats`` resize it."""
        src = self._entries[label].source
        if isinstance(src, torch.Tensor):
            return resize(src.detach().float().cpu(), size)
        return resize(load_image(src, name=label), size)  # type: ignore[arg-type]

    def _unique(self, name: str) -> str:
        label, n = name, 1
        while label in self._entries:
            n += 1
            label = f"{name} ({n})"
        return label

    def add(self, name: str, source: object, origin: str | None = None,
            digest: str = "") -> str:
        """Add an image under a new label (``name``, or ``name (2)`` when taken); its label."""
        if isinstance(source, Image.Image):
            source = pil_to_tensor(source, self.side)
        if isinstance(source, (str, Path)):
            origin = origin or _origin(Path(source))
        elif isinstance(source, torch.Tensor):
            digest = digest or _tensor_digest(source)
        else:
            raise ParameterError(f"an explorer image is a path, a (3, H, W) tensor or a PIL "
                                 f"image, not {type(source).__name__}")
        label = self._unique(name)
        self._entries[label] = ImageEntry(label, source, origin or "yours", digest)
        return label

    def add_upload(self, name: str, content: bytes, max_bytes: int = MAX_BYTES
                   ) -> tuple[str, list[str]]:
        """Check, decode, shrink and add an upload; returns its label and the digests dropped to
        keep at most ``max_uploads`` (the same content uploaded again returns its existing
        label). Raises :class:`ImageError` naming the file once."""
        if len(content) > max_bytes:
            raise ImageError(f"cannot read image {name}: "
                             f"{over_limit(len(content), max_bytes, 'MB')} (the upload limit)")
        check_upload(content, name)
        digest = hashlib.sha256(content).hexdigest()
        for e in self._entries.values():
            if e.origin == "upload" and e.digest == digest:
                return e.label, []
        image = pil_to_tensor(load_pil(content, name=name), self.side)
        label = self.add(name, image, "upload", digest)
        uploads = [e for e in self._entries.values() if e.origin == "upload"]
        dropped = uploads[: max(0, len(uploads) - self.max_uploads)]
        for e in dropped:
            del self._entries[e.label]
        return label, [e.digest for e in dropped]


def read_upload(files: object) -> tuple[str, bytes] | None:
    """``(name, content)`` of the first file in a ``FileUpload`` value (ipywidgets 7 or 8)."""
    if not files:
        return None
    f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))  # type: ignore[attr-defined]
    name = f["name"] if isinstance(f, Mapping) else getattr(f, "name", "upload")
    return name, bytes(f["content"] if isinstance(f, Mapping) else f.content)
