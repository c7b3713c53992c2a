"""Floor 3: the one engine under ``attnviz report``, ``attnviz stats``, ``attnviz evaluate`` and
the explorers.

    net, name = load_for_run("demo-cbam")            # the model, refused if its weights are random
    out = probe(net, layers=None)                    # NoAttentionError / what the output means
    result = forward(net, x, output=None, amp=False)  # one batch: Output (classifier/dense/none)

Data flows one way: source (:mod:`.sources`: files, folders, ImageFolder trees, ``shapes:N``;
:mod:`.shards`: tar shards) → :func:`attnviz.models.preprocess.resize` / ``prepare`` → batches →
``model(x)`` inside :func:`attnviz.record` → :func:`attnviz.outputs.interpret` → per-kind
reducers → sinks → :mod:`attnviz.publish`.
"""

from __future__ import annotations

from .model import forward, is_random, load_for_run, probe, random_weights_note

__all__ = ["forward", "is_random", "load_for_run", "probe", "random_weights_note"]
