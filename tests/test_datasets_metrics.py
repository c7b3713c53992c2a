"""Shapes data with ground truth, and the localisation / statistics metrics on known maps."""

from __future__ import annotations

import pytest
import torch

from attnviz import metrics
from attnviz.datasets import CLASSES, ShapesDataset, make_shapes


def test_make_shapes_is_deterministic_and_well_formed() -> None:
    a, b = make_shapes(12, seed=3), make_shapes(12, seed=3)
    assert a.images.shape == (12, 3, 64, 64) and a.images.dtype == torch.float32
    assert a.labels.shape == (12,) and a.masks.shape == (12, 64, 64) and a.masks.dtype == torch.bool
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, make_shapes(12, seed=4).images)
    assert a.classes == CLASSES
    share = a.masks.float().mean((1, 2))
    assert (share > 0.005).all() and (share < 0.3).all()  # one visible object per image
    # index i of the stream is the same image however it is sliced
    torch.testing.assert_close(make_shapes(4, seed=3, start=8).images, a.images[8:])


def test_dataset_matches_make_shapes() -> None:
    ds, batch = ShapesDataset(5, seed=2, size=48), make_shapes(5, seed=2, size=48)
    img, label, mask = ds[3]
    torch.testing.assert_close(img, batch.images[3])
    assert label == batch.labels[3] and torch.equal(mask, batch.masks[3])
    with pytest.raises(IndexError):
        ds[5]


def test_object_pixels_carry_the_target_colour() -> None:
    data = make_shapes(8, seed=9)
    for img, m in zip(data.images, data.masks, strict=True):
        inside = img[:, m]
        assert inside.std(1).max() < 0.08  # one flat colour (+ noise) on the object


def _objects() -> torch.Tensor:
    obj = torch.zeros(2, 32, 32, dtype=torch.bool)
    obj[0, 4:12, 4:12] = True
    obj[1, 20:28, 16:30] = True
    return obj


def test_pointing_game_on_constructed_maps() -> None:
    obj = _objects()
    on = torch.zeros(2, 8, 8)
    on[0, 2, 2] = 1  # cell centre (10, 10) inside object 0
    on[1, 6, 5] = 1  # cell centre (22, 26) inside object 1
    assert metrics.pointing_game(on, obj) == 1.0
    off = torch.zeros(2, 8, 8)
    off[:, 7, 0] = 1  # bottom-left corner: inside neither
    assert metrics.pointing_game(off, obj, tolerance=0) == 0.0


def test_energy_in_box_known_values() -> None:
    obj = _objects()
    uniform = torch.full((2, 32, 32), 0.5)
    torch.testing.assert_close(metrics.energy_in_box(uniform, obj), torch.ones(2))
    only_box = obj.float()
    box_share = obj.flatten(1).float().mean(1)
    torch.testing.assert_close(metrics.energy_in_box(only_box, obj), 1 / box_share)
    # a flat floor under a peaked mask: raw ratio near 1, minus-min ratio recovers the peak
    floor = 0.9 + 0.1 * obj.float()
    assert metrics.energy_in_box(floor, obj).max() < 1.2
    torch.testing.assert_close(
        metrics.energy_in_box(floor, obj, subtract_min=True), 1 / box_share, rtol=1e-4, atol=1e-4
    )


def test_boxes_from_masks() -> None:
    assert metrics.boxes_from_masks(_objects()).tolist() == [[4, 4, 12, 12], [16, 20, 30, 28]]


def test_class_specificity_separable_vs_random() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 5
    centres = torch.rand(5, 32, generator=g)
    separable = centres[labels] + 0.01 * torch.randn(200, 32, generator=g)
    assert metrics.class_specificity(separable, labels) == 1.0
    noise = torch.rand(200, 32, generator=g)
    assert metrics.class_specificity(noise, labels) < 0.45


def test_spearman_topk_entropy_saturation() -> None:
    a = torch.arange(16.0).view(1, 4, 4)
    torch.testing.assert_close(metrics.spearman(a, a), torch.ones(1))
    torch.testing.assert_close(metrics.spearman(a, -a), -torch.ones(1))
    assert metrics.topk_iou(a, a, 0.25).item() == 1.0
    assert metrics.topk_iou(a, -a, 0.25).item() == 0.0
    torch.testing.assert_close(metrics.entropy(torch.ones(1, 4)), torch.tensor([1.3862944]))
    onehot = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    normalized = metrics.entropy(torch.cat([torch.ones(1, 4), onehot]), normalized=True)
    torch.testing.assert_close(normalized, torch.tensor([1.0, 0.0]))
    assert metrics.entropy(torch.ones(3, 1), normalized=True).tolist() == [0.0] * 3
    sat = metrics.saturation(torch.tensor([[0.01, 0.5, 0.99, 0.97]]))
    torch.testing.assert_close(sat, torch.tensor([0.75]))
    with pytest.raises(ValueError):
        metrics.topk_iou(a, a, 0.0)


def test_bundled_samples_and_licenses() -> None:
    import attnviz

    shapes, photos = attnviz.sample_images("shapes"), attnviz.sample_images("photos")
    assert len(shapes) == 5 and 4 <= len(photos) <= 8
    assert attnviz.sample_images() == shapes + photos  # shapes first for the demo models
    licenses = (attnviz.data_dir() / "LICENSES.md").read_text()
    assert all(p.name in licenses for p in photos)
    for p in shapes + photos:
        assert attnviz.load_image(p).shape[0] == 3
    with pytest.raises(ValueError, match="kind"):
        attnviz.sample_images("cats")
