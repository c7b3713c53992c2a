"""attnviz's error types: one readable message naming the problem."""

from __future__ import annotations


class AttnvizError(Exception):
    """Base class of every error attnviz raises on purpose."""


class ParameterError(AttnvizError, ValueError):
    """A bad argument or parameter value."""


class ImageError(AttnvizError, ValueError):
    """An image that cannot be read; the message names the file and the reason."""


class ModelError(AttnvizError, ValueError):
    """An unknown model name or weights that cannot be fetched."""


class CheckpointError(AttnvizError, ValueError):
    """A checkpoint that cannot be read safely or does not fit the architecture."""


class NoAttentionError(AttnvizError, ValueError):
    """A model (or layer pattern) with no supported attention module."""


class RecorderBusyError(AttnvizError, RuntimeError):
    """A second recorder was entered on a model that is already being recorded."""


class MemoryBudgetError(AttnvizError, MemoryError):
    """Recording would hold more attention weights than the budget allows (``max_bytes``)."""


class MissingDependencyError(AttnvizError, ImportError):
    """An optional part of attnviz is not installed; the message names the extra to install."""


def missing_dependency(feature: str, module: str, extra: str) -> MissingDependencyError:
    """The error for ``feature`` lacking ``module``: install ``attnviz[extra]``."""
    return MissingDependencyError(
        f"{feature} needs {module}, which is not installed: pip install 'attnviz[{extra}]'")


def require(*modules: str, extra: str, feature: str) -> None:
    """Raise :class:`MissingDependencyError` unless every top-level module can be imported
    (checked without importing them)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(feature, module, extra)
