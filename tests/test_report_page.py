"""The report page of the bundled images teaches: viridis, maps large enough with a click-to-
enlarge view without script, each overlay beside its map alone, every summary column defined on
the page, channel weights as their sorted distribution with its spread, the query marked on
attention rows."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz import report
from attnviz.report.figures import DIST_Y0, DIST_Y1, SIDE
from attnviz.report.stats import COLUMNS, SUMMARY_FIELDS
from attnviz.samples import sample_images
from attnviz.vis import DEFAULT_CMAP


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("pages")
    return {m: report.write_report(attnviz.data_dir() / "images", model=m, out_dir=out / m,
                                   progress=False).read_text()
            for m in ("demo-cbam", "demo-botnet")}


def _png(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_one_colour_map_viridis(pages) -> None:
    from matplotlib import colormaps

    page = pages["demo-cbam"]
    (bar,) = re.findall(r'<img src="([^"]+)" alt="colour bar">', page)
    drawn = _png(bar)[0]
    expected = np.round(colormaps[DEFAULT_CMAP].resampled(len(drawn))(
        np.arange(len(drawn)))[:, :3] * 255)
    np.testing.assert_array_equal(drawn, expected)
    assert DEFAULT_CMAP == "viridis" and "jet" not in re.sub(r"data:[^\"')]+", "", page)


def test_maps_large_each_overlay_beside_its_map_alone_and_enlarged_on_click(pages) -> None:
    for page in pages.values():
        assert "<script" not in page
        figures = re.findall(r'<figure class="tile" id="([\w-]+)"><a class="panels" '
                             r'href="#([\w-]+)"[^>]*>(.*?)</a>', page, flags=re.S)
        assert figures
        overlays = 0
        for fid, href, panels in figures:
            assert fid == href  # a click targets the figure itself: the CSS enlarges it
            if '<div class="ov img' in panels:
                overlays += 1
                over, alone = panels.split('<div class="pl alone"')
                src = re.search(r'<img src="([^"]+)"', over).group(1)
                assert re.search(r'<img src="([^"]+)"', alone).group(1) == src
                assert f"width:{SIDE}px" in over and SIDE >= 160
        assert overlays == page.count('<div class="ov img') > 0
        assert len({f[0] for f in figures}) == len(figures)  # ids are unique
        css = page[page.index("<style>"):page.index("</style>")]
        assert ".tile:target" in css and "zoom: 3" in css and 'href="#_"' in page


def test_every_summary_column_is_defined_on_the_page(pages) -> None:
    for page in pages.values():
        table = page[page.index("<h3>Attention layers</h3>"):page.index('<dl class="legend"')]
        columns = re.findall(r'<th><a href="#col-(\w+)"', table)
        heads = re.findall(r"<th>", table)
        assert columns and len(columns) == len(heads)  # every header links to its definition
        legend = page[page.index('<dl class="legend"'):page.index("</dl>")]
        defined = dict(re.findall(r'<dt id="col-(\w+)">\1</dt><dd>([^<]+)</dd>', legend))
        assert set(columns) <= set(defined)
        assert all(html.unescape(defined[c]) == COLUMNS[c] and len(COLUMNS[c]) > 20
                   for c in columns)
    assert {"attn_distance", "local_mass"} <= set(re.findall(
        r'<dt id="col-(\w+)">', pages["demo-botnet"]))


def test_each_column_has_one_definition() -> None:
    """``summary.csv``'s columns and the page's legend share one definition (stats.COLUMNS)."""
    from attnviz.report import render, stats

    assert set(SUMMARY_FIELDS) <= set(COLUMNS) and render.COLUMNS is COLUMNS  # not a copy
    assert all(f"``{f}``" not in (stats.__doc__ or "") for f in SUMMARY_FIELDS[3:])


def test_channel_weights_are_their_sorted_distribution_with_its_spread(pages) -> None:
    """Every s(c) of a block, sorted: the polyline's points are the recorded weights of that
    image (to the drawing's precision), and the caption states their spread."""
    page = pages["demo-cbam"]
    circle = next(p for p in sample_images("shapes") if "circle" in p.name)
    at = page.index(f"{circle.name}</code>")
    section = page[at:page.index("</section>", at)]
    charts = re.findall(r'<svg class="dist".*?<polyline points="([^"]+)"/>\s*</svg>'
                        r"<figcaption>([\w.]+)<br>([^<]+)</figcaption>", section, flags=re.S)
    assert len(charts) == 8 and "<rect x=" not in section.replace('<rect class="iqr"', "")
    model = attnviz.load_model("demo-cbam", device="cpu")
    x = attnviz.models.prepare(model, attnviz.load_image(circle))
    with torch.no_grad(), attnviz.record(model, kinds=("channel",)) as rec:
        model(x)
    unit = (DIST_Y0 - DIST_Y1)
    for points, layer, caption in charts:
        s = rec.channel[layer][0].numpy()
        ys = np.array([float(p.split(",")[1]) for p in points.split()])
        drawn = (DIST_Y0 - ys) / unit
        np.testing.assert_allclose(drawn, np.sort(s)[::-1], atol=0.06 / unit + 1e-3)
        assert np.all(np.diff(drawn) <= 1e-9)  # sorted, largest first
        q25, med, q75 = np.percentile(s, [25, 50, 75])
        assert caption.startswith(f"{s.size} channels: median {med:.2f}, IQR {q25:.2f}–"
                                  f"{q75:.2f}, range {s.min():.2f}–{s.max():.2f}, sd {s.std():.2f}")


def test_attention_rows_mark_their_query(pages) -> None:
    page = pages["demo-botnet"]
    rows = re.findall(r'<div class="(ov img\d+|pl alone)"\s*style="[^"]+"><img [^>]+>'
                      r'(?:<img class="outline"[^>]+>)?(<span class="q"[^>]+>\+</span>)?',
                      page)
    marked = [m for _, m in rows if m]
    # per image, the centre query's row over the input and alone: both marked at cell (4, 4)
    assert len(marked) == 2 * page.count("<section>") > 0
    assert all('left:56.2%;top:56.2%' in m for m in marked)
