"""The training code really trains, and what it writes loads back exactly."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

import attnviz
from attnviz.datasets import make_shapes
from attnviz.train import TrainConfig, train


def test_few_steps_reduce_loss_and_checkpoint_round_trips(tmp_path) -> None:
    data = make_shapes(96, seed=0)
    cfg = TrainConfig(model="demo_cbam_resnet", steps=40, batch_size=32, lr=3e-3, mask_penalty=1e-2)
    torch.manual_seed(0)
    untrained = attnviz.create_model("demo_cbam_resnet").eval()
    model, card = train(
        cfg,
        tmp_path,
        "tiny",
        half=False,
        data=(data.images, data.labels, data.classes),
        eval_n=50,
        progress=False,
    )
    with torch.no_grad():
        before = F.cross_entropy(untrained(data.images), data.labels).item()
        after = F.cross_entropy(model(data.images), data.labels).item()
    assert after < before - 0.1, (before, after)

    written = json.loads((tmp_path / "tiny.json").read_text())
    assert (
        written["architecture"] == "demo_cbam_resnet" and written["weights"] == "tiny.safetensors"
    )
    assert "mean(A)" in written["objective"] and written["classes"] == list(data.classes)
    assert {"accuracy", "layers", "random_init"} <= set(written["test"])
    assert card["test"]["n"] == 50

    loaded = attnviz.load_model(
        "demo_cbam_resnet", checkpoint=tmp_path / "tiny.safetensors", device="cpu"
    )
    assert loaded.class_names == list(data.classes)
    x = data.images[:4]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_mask_penalty_reaches_the_spatial_gates() -> None:
    model = attnviz.create_model("demo_cbam_resnet").train()
    with attnviz.record(model, kinds=["spatial"], keep_graph=True) as rec:
        model(make_shapes(4, seed=1).images)
    torch.stack([r.value.mean() for r in rec.records]).sum().backward()
    conv = model.layer3[0].attn.spatial.conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_evaluate_command_prints_trained_and_random(capsys) -> None:
    from attnviz.evaluate import main

    assert main(["--model", "demo-cbam", "--n", "40", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: trained" in out and "random init" in out
    assert "layer3.0.attn.spatial" in out and "spatial" in out
