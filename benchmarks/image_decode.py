"""What the check for corrupt JPEG data costs: ``load_image`` of each bundled image (the photos
are JPEGs up to 512 px, the generated shapes 64-px PNGs) with :func:`attnviz.images.check_jpeg`
and with it switched off, interleaved in one run (best of ``--repeat``, ms), and the share of
JPEGs with 200 random bytes written into their compressed data that are refused.

    python benchmarks/image_decode.py               # timings and the detection rate
    python benchmarks/image_decode.py --repeat 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import attnviz
from attnviz import images
from attnviz.errors import ImageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_jpeg_damage import corrupt  # noqa: E402  (the tests' own damage, one definition)


def _best(path: Path, repeat: int, check: bool) -> float:
    real = images.check_jpeg
    images.check_jpeg = real if check else (lambda data, name: None)  # type: ignore[assignment]
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            images.load_image(path, 224)
            times.append(time.perf_counter() - t0)
    finally:
        images.check_jpeg = real  # type: ignore[assignment]
    return min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    files = sorted((attnviz.data_dir() / "images").iterdir())
    print(f"{'image':24s} {'unchecked ms':>12s} {'checked ms':>10s} {'ratio':>6s}")
    for f in files:
        off = on = float("inf")
        for _ in range(3):  # interleaved: both see the same load on the machine
            off = min(off, _best(f, args.repeat, False))
            on = min(on, _best(f, args.repeat, True))
        print(f"{f.name:24s} {off:12.3f} {on:10.3f} {on / off:6.2f}")
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
