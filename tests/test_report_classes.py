"""How each predicted class's channel weights deviate from the mean over all images: the numbers
on the report page and in ``summary.json`` are what the network computed (recomputed here from
s(c) recorded by :func:`attnviz.record`, image by image), and the rule of which classes are
shown holds."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
import torch

import attnviz
from attnviz import report
from attnviz.report.classes import MIN_CLASS_IMAGES, ClassChannels, predicted_classes


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[str, dict]:
    """``make report``: demo-cbam over the bundled images."""
    out = tmp_path_factory.mktemp("classes")
    page = report.write_report(attnviz.data_dir() / "images", model="demo-cbam", out_dir=out,
                               progress=False, top_k=4).read_text()
    return page, json.loads((out / "summary.json").read_text())


def _recorded(paths: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each image on its own: the predicted class and every block's s(c) (N, C)."""
    model = attnviz.load_model("demo-cbam", device="cpu")
    classes, weights = [], {}
    for p in paths:
        x = attnviz.models.prepare(model, attnviz.load_image(p))
        with torch.no_grad(), attnviz.record(model, kinds=("channel",)) as rec:
            logits = model(x)
        classes.append(int(logits.argmax(1)))
        for key, s in rec.channel.items():
            weights.setdefault(key, []).append(s[0].double().numpy())
    return np.array(classes), {k: np.stack(v) for k, v in weights.items()}


def test_class_deviation_is_what_the_network_computed(written) -> None:
    page, summary = written
    paths = [p["image"] for p in summary["predictions"]]
    classes, weights = _recorded(paths)
    counts = np.bincount(classes)
    shown = [k for k in range(len(counts)) if counts[k] >= MIN_CLASS_IMAGES]
    # the demo has classes to compare: 3 with at least 2 images, 2 with one (left out)
    assert len(shown) >= 2 and (counts == 1).any()
    blocks = summary["class_channels"]["blocks"]
    assert [b["layer"] for b in blocks] == list(weights)
    section = page[page.index('id="class-channels"'):page.index("<h2>Summary")]
    for b in blocks:
        s = weights[b["layer"]]
        mean, sd = s.mean(0), s.std(0)
        np.testing.assert_allclose(b["mean"], mean, atol=1e-5)
        np.testing.assert_allclose(b["sd"], sd, atol=1e-5)
        assert b["images"] == len(paths)
        assert [c["class_index"] for c in b["classes"]] == shown
        at = section.index(f"<h4>{b['layer']} (")
        end = section.find("<h4>", at + 4)
        block = section[at:end if end > 0 else None]
        for c in b["classes"]:
            k = c["class_index"]
            dev = s[classes == k].mean(0) - mean
            assert c["images"] == counts[k]
            np.testing.assert_allclose(c["deviation"], dev, atol=1e-5)
            top = np.argsort(-np.abs(dev), kind="stable")[:4]
            assert [d["channel"] for d in c["largest"]] == top.tolist()
            for d in c["largest"]:
                ch = d["channel"]
                assert d["deviation"] == pytest.approx(dev[ch], abs=1e-5)
                assert d["in_sd"] == pytest.approx(dev[ch] / sd[ch], rel=1e-3, abs=1e-4)
            # the page states the three largest, as computed, under the class's chart
            label = html.escape(c["label"])
            caption = re.search(rf"<figcaption>{label} \({counts[k]} images\)<br>"
                                r"largest \|Δ\|: ([^<]+)</figcaption>", block).group(1)
            stated = re.findall(r"c(\d+) ([+-]\d\.\d{3}) \(([+-]\d+\.\d) sd\)", caption)
            assert [(int(ch), float(v)) for ch, v, _ in stated] == [
                (int(ch), round(float(dev[ch]), 3)) for ch in top[:3]]
            for ch, _, z in stated:
                assert float(z) == pytest.approx(dev[int(ch)] / sd[int(ch)], abs=0.051)


def test_the_page_defines_the_deviation_and_states_its_rule(written) -> None:
    page, summary = written
    section = page[page.index('id="class-channels"'):page.index("<h2>Summary")]
    text = html.unescape(re.sub(r"<[^>]+>", "", section))
    assert "Δ(c) = mean s(c) over the images predicted as k − mean s(c) over all images" in text
    assert "sd(c) = the standard deviation of s(c) over all images" in text
    assert f"at least {MIN_CLASS_IMAGES} images" in text
    assert summary["class_channels"]["rule"] in text
    charts = section.count('<svg class="dist"')
    assert charts == sum(len(b["classes"]) for b in summary["class_channels"]["blocks"]) > 0


def test_the_rule_batches_and_bad_images() -> None:
    """Classes with fewer than MIN_CLASS_IMAGES images are left out, a single predicted class
    gives nothing, images without a prediction or with non-finite s(c) do not count, and the
    sums do not depend on how the images were batched."""
    g = torch.Generator().manual_seed(0)
    s = torch.rand(9, 5, generator=g)
    cls = torch.tensor([0, 0, 0, 1, 1, 2, -1, 1, 0])
    s[7, 2] = float("nan")  # left out: the class-1 image 7
    one, two = ClassChannels(), ClassChannels()
    one.add("b", s, cls, 3)
    two.add("b", s[:4], cls[:4], 3)
    two.add("b", s[4:], cls[4:], 3)
    a, b = one.deviations(None, 5), two.deviations(None, 5)
    ok = torch.tensor([True] * 6 + [False, False, True])
    keep, kc = s[ok].double(), cls[ok]
    assert [c["class_index"] for c in a[0]["classes"]] == [0, 1]  # class 2 has one image
    assert a[0]["images"] == 7 and a[0]["classes"][1]["images"] == 2
    for got in (a, b):
        for c in got[0]["classes"]:
            want = keep[kc == c["class_index"]].mean(0) - keep.mean(0)
            np.testing.assert_allclose(c["deviation"], want.numpy(), atol=1e-12)
            assert c["label"] == f"class {c['class_index']}"
    single = ClassChannels()
    single.add("b", s[:3], cls[:3], 3)
    assert single.deviations(None, 5) == []
    assert predicted_classes(torch.tensor([[0.1, 2.0], [float("nan"), 1.0]])).tolist() == [1, -1]
