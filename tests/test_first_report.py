"""The first report (``make report``): the bundled shapes first, outlined, with per-image
localisation numbers beside a random-init copy; photos after them, headed as out of
distribution; nothing listed as unreadable."""

from __future__ import annotations

import re
import shutil

import numpy as np
import torch

import attnviz
from attnviz import cli, metrics
from attnviz.samples import ground_truth, sample_images


def test_ground_truth_only_for_the_unchanged_bundled_shapes(tmp_path) -> None:
    from PIL import Image

    shapes = sample_images("shapes")
    for p in shapes:
        mask = ground_truth(p)
        assert mask is not None and mask.dtype == torch.bool and 100 < int(mask.sum()) < 600
        # the mask is where the shape's flat colour is: its pixels vary far less than the rest
        img = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
        inside, outside = img[mask.numpy()], img[~mask.numpy()]
        assert inside.std(0).mean() < 0.5 * outside.std(0).mean()
    assert all(ground_truth(p) is None for p in sample_images("photos"))
    edited = tmp_path / shapes[0].name
    shutil.copy(shapes[0], edited)
    arr = np.asarray(Image.open(edited)).copy()
    arr[0, 0] ^= 1
    Image.fromarray(arr).save(edited)
    assert ground_truth(edited) is None  # one pixel changed: no claim of ground truth


def test_first_report_shapes_first_with_numbers(tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    images = attnviz.data_dir() / "images"
    assert cli.main(["report", str(images), "--model", "demo-cbam", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Could not read" not in page
    inside = page.index('id="in-distribution"')
    outside = page.index('id="out-of-distribution"')
    assert inside < outside
    shapes_part, photos_part = page[inside:outside], page[outside:]
    assert shapes_part.count("<section>") == 5 and photos_part.count("<section>") >= 5
    assert all(f"{p.name}</code>" in shapes_part for p in sample_images("shapes"))
    assert all(f"{p.name}</code>" in photos_part for p in sample_images("photos"))
    assert shapes_part.count('class="outline"') >= 5 * 9  # the input and 8 spatial masks
    assert 'class="outline"' not in photos_part
    assert "resnest50d" in page[outside:outside + 2000]

    # the numbers on the page are the metrics of the recorded masks of that image
    model = attnviz.load_model("demo-cbam", device="cpu")
    circle = next(p for p in sample_images("shapes") if "circle" in p.name)
    x = attnviz.models.prepare(model, attnviz.load_image(circle))
    with torch.no_grad(), attnviz.record(model, kinds=("spatial",)) as rec:
        model(x)
    objects = ground_truth(circle)[None]
    section = shapes_part[shapes_part.index("shapes_circle.png</code>"):]
    table = section[:section.index("</table>")]
    rows = re.findall(r"<tr><td>([\w.]+)</td><td>(yes|no)</td><td>([\d.]+)</td>", table)
    assert len(rows) == len(rec.spatial) == 8
    for layer, hit, energy in rows:
        mask = rec.spatial[layer]
        assert (hit == "yes") == bool(metrics.pointing_hits(mask, objects)[0])
        assert float(energy) == round(metrics.energy_in_box(mask, objects)[0].item(), 3)
    assert any(hit == "yes" for _, hit, _ in rows)


def test_report_reads_what_stats_reads(tmp_path) -> None:
    """One data path: shapes:N (with its ground truth) and an ImageFolder tree go into a report
    as into attnviz stats."""
    out = tmp_path / "shapes"
    assert cli.main(["report", "shapes:6", "--model", "demo-cbam", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    section = page[page.index('id="in-distribution"'):]
    assert section.count("<section>") == 6 and section.count('class="t loc"') == 6
    assert 'id="out-of-distribution"' not in page

    tree = tmp_path / "tree"
    for k, p in enumerate(sample_images("shapes")[:2]):
        (tree / f"class{k}" / "deep").mkdir(parents=True)
        shutil.copy(p, tree / f"class{k}" / "deep" / p.name)
    assert cli.main(["report", str(tree), "--model", "demo-cbam", "--out",
                     str(tmp_path / "tree-out")]) == 0
    summary = (tmp_path / "tree-out" / "summary.json").read_text()
    assert summary.count('"class_index"') == 2  # both images, found below their class folders
