"""Name → builder registry for attnviz's own architectures."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import AttnvizError, ModelError, ParameterError
from ..terminal import one_line

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make a builder reachable as ``create_model(fn.__name__)``."""
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of attnviz's own architectures."""
    return sorted(_BUILDERS)


def is_model(name: str) -> bool:
    return name in _BUILDERS


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build one of attnviz's architectures by name (random init).

    Raises ModelError for an unknown name, ParameterError for an option the builder lacks.
    """
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise ModelError(f"unknown attnviz model {name!r}; choose one of {list_models()}") from None
    try:
        return builder(**kwargs)
    except AttnvizError:
        raise
    except (TypeError, ValueError) as e:  # an unknown option, or a value of the wrong type
        raise ParameterError(f"create_model({name!r}): bad options {kwargs!r}: "
                             f"{one_line(e)}") from None
