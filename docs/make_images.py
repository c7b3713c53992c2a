"""Draw the README's two pictures with attnviz itself (offline, demo models):

* ``docs/images/explorer.png``: the explorer's view of ``demo-cbam`` on a bundled shape, the
  image a saved notebook keeps of it (``attnviz.widgets.AttentionExplorer(...).draw()``);
* ``docs/images/report.png``: the top of the page ``attnviz report`` writes for the bundled
  images (``make report``), photographed by headless Chromium (``/usr/bin/chromium``, as the
  browser test uses; ``make browser`` installs it).

Run from the repository root: ``make docs-images`` (or ``python docs/make_images.py``).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1000, 820  # the report's browser window: its first screen
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]


def save_small(image: Image.Image, path: Path, colours: int = 128) -> Path:
    """Save ``image`` as an optimised palette PNG (a few tens of kB)."""
    small = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT, dither=0)
    small.save(path, optimize=True)
    return path


def explorer_image(path: Path) -> Path:
    """The explorer on demo-cbam, opened as a notebook opens it (its model card's best spatial
    layer, the first bundled shape)."""
    import attnviz
    from attnviz.widgets import AttentionExplorer

    explorer = AttentionExplorer(attnviz.load_model("demo-cbam", device="cpu"),
                                 images=attnviz.sample_images("shapes"), static=False)
    figure, record = explorer.draw(), explorer.current()
    figure.suptitle(f"demo-cbam · {explorer.image_select.value} · {record.name}: its mask A "
                    "over the image, fixed 0–1 scale", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return save_small(Image.open(buffer), path)


def report_image(path: Path) -> Path:
    """``attnviz report data/images --model demo-cbam``, its first screen in Chromium."""
    from attnviz.report import write_report
    from attnviz.resources import data_dir

    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is missing: `make browser` installs it")
    with tempfile.TemporaryDirectory(prefix="attnviz-docs-") as tmp:
        os.chdir(HERE.parent)  # the page names the images as `make report` does: data/images/...
        page = write_report([os.path.relpath(data_dir() / "images")], model="demo-cbam",
                            device="cpu", out_dir=os.path.join(tmp, "report"), progress=False)
        shot = Path(tmp, "shot.png")
        subprocess.run([str(CHROMIUM), *CHROMIUM_ARGS, f"--user-data-dir={tmp}/profile",
                        f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}",
                        page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        return save_small(Image.open(shot), path)


def main(argv: list[str] | None = None) -> int:
    """Write the pictures named on the command line (default: both)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    makers = {"explorer": explorer_image, "report": report_image}
    parser.add_argument("which", nargs="*", choices=[*makers, []], help="default: both")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    for name in args.which or makers:
        path = makers[name](OUT / f"{name}.png")
        print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
