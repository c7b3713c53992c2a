"""Shared fixtures: one CPU thread, deterministic seeds, small inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` from any rootdir

from helpers import randomize_bn  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def bn_randomizer():
    """``randomize_bn`` as a fixture: ``bn_randomizer(model, seed)`` → number of BNs changed."""
    return randomize_bn


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: HF_HUB_OFFLINE=1, also in the already-imported huggingface_hub, empty cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm always brings huggingface_hub
        return
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"), raising=False)
