"""PyTorch Lightning: the :class:`~attnviz.callbacks.AttentionLogger` as a ``Callback``.

    logger = AttentionLogger(net, probe, every=100, log_dir="runs/tb")
    trainer = lightning.Trainer(callbacks=[AttentionCallback(logger)], ...)

Needs the ``lightning`` package (``pip install 'attnviz[train]'``).
"""

from __future__ import annotations

from typing import Any

from .callbacks import AttentionLogger
from .errors import missing_dependency

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the extra is not installed
    raise missing_dependency("attnviz.lightning", "lightning", "train") from None


class AttentionCallback(Callback):
    """Calls ``logger.step(global_step)`` before every training batch and logs the final
    state when training ends (then closes the logger's TensorBoard writer)."""

    def __init__(self, logger: AttentionLogger) -> None:
        super().__init__()
        self.logger = logger

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        self.logger.step(int(trainer.global_step))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.logger.log(int(trainer.global_step))
        self.logger.close()


__all__ = ["AttentionCallback"]
