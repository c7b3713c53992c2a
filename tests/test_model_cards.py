"""The shipped demo checkpoints still score what their model cards say.

Each demo model is re-measured on the first N_HELD_OUT images of the held-out shapes stream
(seed ``TEST_SEED``; training used seed 0), a subset of the 2,000 its card was scored on.
Tolerances: accuracy at most ACCURACY_DROP below the card (3 binomial standard deviations at
n = 300 and 99.6 % are 0.011); every recorded layer's pointing game and class specificity within
SCORE_TOL of the card, radix a0 spread within A0_STD_TOL, raw energy-in-box within ENERGY_REL
(relative) or ENERGY_ABS (for the near-zero energy of masks that do not localise); the
attention-on-object ratio of self-attention maps within RATIO_REL (relative).
"""

from __future__ import annotations

import pytest

from attnviz.datasets import Shapes, make_shapes
from attnviz.evaluate import TEST_SEED, evaluate
from attnviz.models import DEMO_MODELS, demo_card, load_model

N_HELD_OUT = 300
ACCURACY_DROP = 0.02
SCORE_TOL = 0.06
A0_STD_TOL = 0.02
ENERGY_REL = 0.05
ENERGY_ABS = 0.02
RATIO_REL = 0.1


@pytest.fixture(scope="module")
def held_out() -> Shapes:
    return make_shapes(N_HELD_OUT, seed=TEST_SEED)


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_checkpoint_matches_its_model_card(name: str, held_out: Shapes) -> None:
    card = demo_card(name)["test"]
    assert card["seed"] == TEST_SEED and card["n"] >= N_HELD_OUT
    result = evaluate(load_model(name, device="cpu"), held_out)
    assert card["accuracy"] - ACCURACY_DROP <= result.accuracy <= 1.0, \
        f"{name}: accuracy {result.accuracy:.4f} vs card {card['accuracy']:.4f}"
    on_card = {(s["name"], s["kind"]): s for s in card["layers"]}
    assert {(s.name, s.kind) for s in result.layers} == set(on_card)
    for s in result.layers:
        c = on_card[(s.name, s.kind)]
        where = f"{name} {s.name} ({s.kind})"
        for key in ("pointing", "class_specificity"):
            if c[key] is not None:
                assert abs(getattr(s, key) - c[key]) <= SCORE_TOL, (where, key, getattr(s, key))
        if c["radix_a0_std"] is not None:
            assert abs(s.radix_a0_std - c["radix_a0_std"]) <= A0_STD_TOL, where
        if c.get("object_attention_ratio") is not None:
            tol = RATIO_REL * c["object_attention_ratio"]
            assert abs(s.object_attention_ratio - c["object_attention_ratio"]) <= tol, where
        if c["energy_raw"] is not None:
            tol = max(ENERGY_REL * c["energy_raw"], ENERGY_ABS)
            assert abs(s.energy_raw - c["energy_raw"]) <= tol, where
