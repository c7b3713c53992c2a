"""Attention while training: the logger records a fixed probe batch every N steps, writes
TensorBoard event files (read back here), keeps an in-memory history, warns once about a
degenerate layer, and works through the Lightning callback too."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import attnviz
from attnviz.callbacks import AttentionLogger, AttentionWarning, mask_strip, probe_batch
from attnviz.examples import tutorial_cbam_resnet
from attnviz.train import fit


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0,
                                                       "histograms": 0})
    acc.Reload()
    return acc


def test_fit_logs_to_tensorboard_and_history(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    data = attnviz.datasets.make_shapes(64, seed=0, size=32)
    probe, labels, objects = probe_batch(4, 32)
    model = tutorial_cbam_resnet(8, 1)
    logger = AttentionLogger(model, probe, labels, objects, every=10, log_dir=str(tmp_path))
    fit(model, data.images, data.labels, steps=30, batch_size=16, progress=False, logger=logger)
    steps = [0, 10, 20, 30]  # every 10 steps and the trained state
    sa = "layer1.0.sa"
    assert [s for s, _ in logger.history.maps[sa]] == steps
    assert logger.history.series(f"{sa}/saturation")[0] == steps
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert f"{sa}/maps" in tags["images"] and f"{sa}/pointing" in tags["scalars"]
    assert "layer1.0.ca/class_specificity" in tags["scalars"]
    assert "layer1.0.ca/s" in tags["histograms"]
    assert len(acc.Images(f"{sa}/maps")) == len(steps)
    # the logged numbers are the model's own at that step: the last one is the trained model's
    with torch.no_grad(), attnviz.record(model.eval()) as rec:
        model(attnviz.models.prepare(model, probe))
    last = logger.history.scalars[f"{sa}/mean"][-1][1]
    assert last == pytest.approx(float(rec.spatial[sa].mean()), rel=1e-5)
    assert model.training is False  # fit leaves eval mode; the logger restored train mode


def test_degenerate_masks_warn_once() -> None:
    class Saturated(nn.Module):  # a spatial gate that is always ~1
        def forward(self, x):
            return x * torch.sigmoid(torch.full_like(x[:, :1], 8.0))

    from attnviz.examples import Net

    model = Net(Saturated(), c=8)
    probe, _, _ = probe_batch(2, 16)
    logger = AttentionLogger(model, probe, every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            logger.step(step)
    found = [w for w in caught if issubclass(w.category, AttentionWarning)]
    assert len(found) == 1 and "saturated" in str(found[0].message)
    assert "layer1.0" in str(found[0].message)


def test_mask_strip_and_bad_parameters() -> None:
    model = tutorial_cbam_resnet(8, 1)
    probe, _, _ = probe_batch(2, 16)
    logger = AttentionLogger(model, probe, every=5)
    for step in range(11):
        logger.step(step)
    fig = mask_strip(logger.history, "layer1.0.sa")
    assert len(fig.axes) == 3  # steps 0, 5, 10
    with pytest.raises(attnviz.ParameterError, match="no masks"):
        mask_strip(logger.history, "nope")
    with pytest.raises(attnviz.ParameterError, match="every"):
        AttentionLogger(model, probe, every=0)


def test_lightning_callback_writes_the_same_logs(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    L = pytest.importorskip("lightning")
    from attnviz.lightning import AttentionCallback

    net = tutorial_cbam_resnet(8, 1)
    data = attnviz.datasets.make_shapes(48, seed=0, size=32)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.images, data.labels), batch_size=8)
    probe, labels, objects = probe_batch(4, 32)
    logger = AttentionLogger(net, probe, labels, objects, every=2, log_dir=str(tmp_path))
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[AttentionCallback(logger)])
    trainer.fit(Module(), loader)
    acc = _events(tmp_path)
    assert len(acc.Images("layer1.0.sa/maps")) == 4  # steps 0, 2, 4 and the end (6)
    assert [s for s, _ in logger.history.maps["layer1.0.sa"]] == [0, 2, 4, 6]


def test_train_command_logs_attention(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from attnviz import cli

    code = cli.main(["train", "--model", "demo_cbam_resnet", "--steps", "4", "--n-train", "64",
                     "--size", "32", "--batch-size", "16", "--eval-n", "0", "--out",
                     str(tmp_path / "runs"), "--log-dir", str(tmp_path / "tb"),
                     "--log-every", "2"])
    assert code == 0
    acc = _events(tmp_path / "tb")
    images = [t for t in acc.Tags()["images"] if t.endswith(".spatial/maps")]
    assert images and all(len(acc.Images(t)) == 3 for t in images)  # steps 0, 2 and the end
    assert any(t.endswith("/pointing") for t in acc.Tags()["scalars"])  # shapes: ground truth
