"""What reading an image costs: ``load_image`` of each bundled image (the photos are JPEGs up
to 512 px, the generated shapes 64-px PNGs), interleaved in one run (best of ``--repeat``, ms):

* JPEGs with :func:`attnviz.images.check_jpeg` and with it switched off, and the share of JPEGs
  with 200 random bytes written into their compressed data that are refused;
* PNGs through the fast reader (:mod:`attnviz.pngread`) and through PIL alone, and how much
  faster two threads read 256 of them than one (2.0: the decoder never holds the GIL; 1.0: it
  always does, as PIL's does, so a reader thread stalls the model running beside it).

    python benchmarks/image_decode.py               # timings and the detection rate
    python benchmarks/image_decode.py --repeat 200
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attnviz
from attnviz import images, pngread
from attnviz.errors import ImageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_jpeg_damage import corrupt  # noqa: E402  (the tests' own damage, one definition)


@contextlib.contextmanager
def _swapped(owner: object, name: str, value: object) -> Iterator[None]:
    """``owner.name`` set to ``value`` for the block (restored after)."""
    real = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, real)


def _best(path: Path, repeat: int, size: int | None) -> float:
    """Best of ``repeat`` ``load_image(path, size)`` calls, ms."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        images.load_image(path, size)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def _no_check(data: bytes, name: str) -> None:
    return None


def _threads_speedup(paths: list[Path]) -> float:
    """Images/s of two threads over one, each reading ``paths`` (best of 5)."""
    def read() -> None:
        for p in paths:
            images.load_image(p)

    def timed(n: int) -> float:
        best = float("inf")
        for _ in range(5):
            threads = [threading.Thread(target=read) for _ in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best = min(best, time.perf_counter() - t0)
        return best

    return 2 * timed(1) / timed(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    files = sorted((attnviz.data_dir() / "images").iterdir())
    print(f"{'image':24s} {'unchecked ms':>12s} {'checked ms':>10s} {'ratio':>6s}")
    for f in files:
        if f.suffix.lower() != ".jpg":
            continue
        off = on = float("inf")
        for _ in range(3):  # interleaved: both see the same load on the machine
            with _swapped(images, "check_jpeg", _no_check):
                off = min(off, _best(f, args.repeat, 224))
            on = min(on, _best(f, args.repeat, 224))
        print(f"{f.name:24s} {off:12.3f} {on:10.3f} {on / off:6.2f}")
    if pngread._load_decoder() is None:
        print("TorchCodec is not installed: PIL reads every PNG")
    print(f"{'image':24s} {'PIL ms':>12s} {'fast ms':>10s} {'ratio':>6s}")
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    for f in pngs:  # at their own size, as the report reads them (then resized by torch)
        pil = fast = float("inf")
        for _ in range(3):
            with _swapped(pngread, "_decoder", None):
                pil = min(pil, _best(f, args.repeat, None))
            fast = min(fast, _best(f, args.repeat, None))
        print(f"{f.name:24s} {pil:12.3f} {fast:10.3f} {fast / pil:6.2f}")
    many = (pngs * (256 // max(1, len(pngs)) + 1))[:256]
    with _swapped(pngread, "_decoder", None):
        pil_threads = _threads_speedup(many)
    print(f"two threads against one, 256 PNGs each: PIL {pil_threads:.2f}x, "
          f"fast reader {_threads_speedup(many):.2f}x")
    refused = total = 0
    for f in files:
        if f.suffix.lower() != ".jpg":
            continue
        data = f.read_bytes()
        for seed in range(20):
            for where in (0.2, 0.4, 0.6, 0.8):
                total += 1
                try:
                    images.load_image(corrupt(data, seed, where), name=f.name)
                except ImageError:
                    refused += 1
    print(f"200 random bytes written into a JPEG: {refused}/{total} refused "
          f"({refused / total:.1%}); the rest leave a valid compressed stream")


if __name__ == "__main__":
    main()
