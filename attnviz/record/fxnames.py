"""Site names inside an ``fx`` ``GraphModule``: its generated forward inlines every non-leaf
module, so the running-module stack only sees the root; the graph's ``nn_module_stack`` says
which module each line of the generated code came from."""

from __future__ import annotations

import re
import sys
from types import CodeType

from torch import nn

_ASSIGN = re.compile(r"\s+(\w+) = ")


class FxNames:
    """Line of a ``GraphModule``'s generated forward → the module paths it runs inside
    (outermost first)."""

    def __init__(self, gm: nn.Module) -> None:
        self.code: CodeType = type(gm).forward.__code__
        paths = {n.name: list((n.meta.get("nn_module_stack") or {}).keys())
                 for n in gm.graph.nodes}
        self.lines: dict[int, list[str]] = {}
        for i, line in enumerate(gm.code.splitlines(), 1):
            m = _ASSIGN.match(line)
            if m and paths.get(m[1]):
                self.lines[i] = paths[m[1]]

    def paths(self) -> list[str] | None:
        """The module paths of the graph line running now (``None``: not in the graph code)."""
        f = sys._getframe(2)
        for _ in range(16):
            if f is None:
                return None
            if f.f_code is self.code:
                return self.lines.get(f.f_lineno)
            f = f.f_back
        return None


def fx_names(model: nn.Module) -> FxNames | None:
    """An :class:`FxNames` for a ``torch.fx.GraphModule``, else ``None``."""
    fx = sys.modules.get("torch.fx")
    if fx is None or not isinstance(model, fx.GraphModule):
        return None
    return FxNames(model)
