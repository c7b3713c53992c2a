"""Where a model's attention is: named-adapter sites (found from module types), what earlier
recordings observed (cached per model), layer patterns, stage/block labels, and modules that look
like attention but produced no record."""

from __future__ import annotations

import fnmatch
import functools
import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter, is_

from torch import nn
from torch.nn.modules import module as _module_hooks

from ..errors import ParameterError
from .adapters import Adapter, find_adapter, supported_types
from .stack import is_activation


@dataclass(frozen=True)
class AttentionSite:
    """A place in a model where attention weights are made.

    Attributes:
        name: qualified module name.
        kind: a kind from ``attnviz.record.KINDS``.
        module_type: the adapter label, or ``"observed ..."``.
        source: ``"adapter"`` (found from the module type) or ``"observed"`` (watched).
        order: position in ``model.named_modules()``.
        module: the module.
        adapter: the named adapter, for adapter sites.
        shape: the recorded weight's shape, when a forward pass was watched.
    """

    name: str
    kind: str
    module_type: str
    source: str
    order: int
    module: nn.Module
    adapter: Adapter | None = None
    shape: tuple[int, ...] | None = None


class SiteList(list):
    """``find_attention``'s answer: the sites, plus ``candidates`` — modules that look like
    attention (a sigmoid/softmax inside, or an attention-like name) but produced no record."""

    candidates: list[str]

    def __init__(self, sites: Iterable[AttentionSite] = (), candidates: Iterable[str] = ()):
        super().__init__(sites)
        self.candidates = list(candidates)

    def table(self) -> str:
        """A plain-text table: name, kind, shape, how it was found."""
        rows = [f"{s.name or '(model)':40s} {s.kind:9s} {str(s.shape or ''):22s} {s.module_type}"
                for s in self]
        if self.candidates:
            rows.append("looks like attention, nothing recorded: " + ", ".join(self.candidates))
        return "\n".join(rows)


@dataclass
class ModelInfo:
    """What is known of one model, valid while its module tree is unchanged."""

    signature: tuple[int, ...]
    adapter_sites: list[AttentionSite]
    observed: dict[str, tuple[str, str]] | None = None  # name -> (kind, label), once watched
    scopes: set[str] = field(default_factory=set)  # modules to watch in later recordings
    hooked: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # module -> site
    ran: set[str] = field(default_factory=set)  # modules seen running while watched
    candidates: list[str] = field(default_factory=list)  # look like attention, no record
    model: weakref.ref | None = None
    generation: int = -1  # _GENERATION when the tree was last checked
    _order: dict[str, int] | None = None
    _targets: dict[str, nn.Module] | None = None
    _hook_sites: dict[nn.Module, AttentionSite] | None = None
    _links: tuple[tuple, ...] | None = None

    def unchanged(self, model: nn.Module) -> bool:
        """Is every adapter site still the module at its name? True while, for every step
        ``(parent, key, child)`` on the paths from ``model`` to its sites,
        ``parent._modules[key] is child`` (a ``del``, which registers nothing, breaks one).
        The steps are found once and checked in C loops (``map``): no Python frame per step."""
        if self._links is None:
            self._links = _links(model, self.adapter_sites)
        root_keys, root_children, parents, keys, children = self._links
        return (all(map(is_, map(model._modules.get, root_keys), root_children))
                and all(map(is_, map(dict.get, map(_MODULES, parents), keys), children)))

    def hook_targets(self) -> dict[str, nn.Module]:
        """The module each adapter site's hook goes on (its ``adapter.hook`` submodule), by
        site name; found once per tree."""
        if self._targets is None:
            self._targets = {s.name: resolve(s.module, s.adapter.hook) if s.adapter.hook
                             else s.module for s in self.adapter_sites if s.adapter is not None}
        return self._targets

    def hook_sites(self) -> dict[nn.Module, AttentionSite]:
        """Every adapter site by the module its hook goes on (found once per tree)."""
        if self._hook_sites is None:
            targets = self.hook_targets()
            self._hook_sites = {targets[s.name]: s for s in self.adapter_sites}
        return self._hook_sites

    def settle(self) -> None:
        """Known without watching: every weight of the model comes from a named adapter (see
        :func:`adapters_explain`), so there is nothing to watch, even the first time."""
        self.observed, self.scopes, self.hooked = {}, set(), {}
        self.order("")
        self.ran = set(self._order or ())

    def adapters_only(self) -> bool:
        """Watched once, and every site found is a named adapter (nothing observed to watch)."""
        return self.observed is not None and not self.scopes and not self.hooked

    def all_ran(self) -> bool:
        """Did every module of the model run in a watched forward pass?"""
        self.order("")
        return self._order is not None and len(self.ran) >= len(self._order)

    def order(self, name: str) -> int:
        """Position of ``name`` in ``model.named_modules()`` (-1 when unknown)."""
        if self._order is None:
            model = self.model() if self.model is not None else None
            names = [n for n, _ in model.named_modules()] if model is not None else []
            self._order = {n: i for i, n in enumerate(names)}
        return self._order.get(name, -1)


_INFO: weakref.WeakKeyDictionary[nn.Module, ModelInfo] = weakref.WeakKeyDictionary()
#: bumped whenever any module gets a submodule by ``setattr`` / ``add_module`` (torch's global
#: registration hook, installed once): while it stands still, no module tree has grown or had a
#: child replaced since a ``ModelInfo`` was checked
_GENERATION = [0]


def _registered(_parent: nn.Module, _name: str, _child: nn.Module) -> None:
    _GENERATION[0] += 1


_module_hooks.register_module_module_registration_hook(_registered)


def model_info(model: nn.Module) -> ModelInfo:
    """Cached adapter sites and observations of ``model`` (re-built when modules change).

    The full check compares the identity of every module in the tree (``_signature``: 50–100 µs
    on a ResNet). A model whose sites are all named adapters skips it while no module anywhere
    was registered since (:data:`_GENERATION`) and each site is still the module at its name
    (what ``del`` of a module, which registers nothing, would change:
    :meth:`ModelInfo.unchanged`)."""
    info = _INFO.get(model)
    if (info is not None and info.generation == _GENERATION[0] and info.adapters_only()
            and info.unchanged(model)):
        return info
    generation, signature = _GENERATION[0], _signature(model)
    if info is None or info.signature != signature:
        info = ModelInfo(signature, _adapter_sites(model), model=weakref.ref(model))
        if adapters_explain(model, info.adapter_sites):
            info.settle()
        if all(site.module is not model for site in info.adapter_sites):
            _INFO[model] = info  # (a model that is a site itself would be kept alive by it)
    info.generation = generation
    return info


_MODULES = attrgetter("_modules")


def _links(model: nn.Module, sites: list[AttentionSite]) -> tuple[tuple, ...]:
    """Every step ``(parent, key, child)`` on the paths from ``model`` to ``sites``, each once,
    as ``(root keys, their children, parents, keys, children)``: the steps from the root apart,
    so that the per-model cache does not hold the model itself."""
    seen: dict[tuple[int, str], tuple[nn.Module, str, nn.Module]] = {}
    for site in sites:
        parent = model
        for key in site.name.split(".") if site.name else ():
            child = parent._modules.get(key)
            if child is None:
                break
            seen.setdefault((id(parent), key), (parent, key, child))
            parent = child
    root = [(k, c) for p, k, c in seen.values() if p is model]
    rest = [(p, k, c) for p, k, c in seen.values() if p is not model]
    return (tuple(k for k, _ in root), tuple(c for _, c in root), tuple(p for p, _, _ in rest),
            tuple(k for _, k, _ in rest), tuple(c for _, _, c in rest))


#: torch.nn built-ins whose forward may make a weight: softmax / sigmoid modules, attention
_TORCH_WEIGHTS = frozenset({"Sigmoid", "Hardsigmoid", "Softmax", "Softmax2d", "Softmin",
                            "LogSoftmax", "GLU", "MultiheadAttention"})
_TORCH_NN = "torch.nn.modules."


def plain_forward(module: nn.Module) -> bool:
    """Does this module's own forward make no attention weight (its children aside)? True for
    torch.nn's built-ins other than the softmax and sigmoid modules, attention, transformer
    and recurrent layers, and for a class that says so in its own body (``attnviz_plain =
    True``, as attnviz's ResNet and blocks do): a subclass, which may add a gate to its
    forward, is not taken on trust, nor a module whose own ``forward`` was replaced."""
    if "forward" in module.__dict__:
        return False
    cls = type(module)
    where = cls.__module__
    if where.startswith(_TORCH_NN):
        return cls.__name__ not in _TORCH_WEIGHTS and where not in (
            _TORCH_NN + "transformer", _TORCH_NN + "rnn")
    return cls.__dict__.get("attnviz_plain") is True


def adapters_explain(model: nn.Module, sites: list[AttentionSite]) -> bool:
    """Do the named adapter ``sites`` account for every weight ``model`` can make? They do
    when there is one, every module outside them has a plain forward
    (:func:`plain_forward`) and nothing else looks like attention: then even the first
    recording watches nothing (a watched pass would find these sites and no more)."""
    if not sites:
        return False
    covered = {id(m) for s in sites for m in s.module.modules()}
    return (all(id(m) in covered or plain_forward(m) for m in model.modules())
            and not candidates(model, [s.name for s in sites]))


def resolve(model: nn.Module, name: str) -> nn.Module | None:
    """The submodule at ``name`` (``get_submodule`` without its attribute lookups), or None."""
    m: nn.Module | None = model
    for atom in name.split(".") if name else ():
        m = m._modules.get(atom) if m is not None else None
    return m


def _signature(model: nn.Module) -> tuple[int, ...]:
    """Identity of every module in the tree (a few times cheaper than ``model.modules()``)."""
    ids, stack = [], [model]
    while stack:
        m = stack.pop()
        ids.append(id(m))
        stack.extend(c for c in m._modules.values() if c is not None)
    return tuple(ids)


def _adapter_sites(model: nn.Module) -> list[AttentionSite]:
    sites = []
    for order, (name, module) in enumerate(model.named_modules()):
        adapter = find_adapter(module)
        if adapter is not None:
            sites.append(AttentionSite(name, adapter.kind_of(module), adapter.label, "adapter",
                                       order, module, adapter))
    return sites


def parse_layers(layers: str | Iterable[str] | None) -> list[str] | None:
    """Validate a layer pattern (glob, list of globs, or ``re:`` regex)."""
    if layers is None:
        return None
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ParameterError(
            f"layers must be a non-empty pattern or list of patterns, got {layers!r}"
        )
    for p in patterns:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                msg = f"layers: {p!r} is not a valid regular expression ({e})"
                raise ParameterError(msg) from None
    return patterns


def matches(name: str, patterns: list[str] | None) -> bool:
    """True when ``name`` matches a pattern; a pattern without wildcards also matches below."""
    if patterns is None:
        return True
    for p in patterns:
        if p.startswith("re:"):
            if re.search(p[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*"):
            return True
    return False


_PAIR = re.compile(r"[A-Za-z_]*?(\d+)[-_](\d+)")


@functools.lru_cache(maxsize=4096)
def stage_block(name: str) -> tuple[int | None, int | None]:
    """Stage and block of a module name: the deepest index into a container is the block, the
    index or number just above it the stage (``layer3.0`` → 3, 0; ``0.layer3.1.se`` → 3, 1;
    ``stages.2.blocks.0.attn`` → 2, 0; torchvision RegNet ``block1-0`` → 1, 0)."""
    parts = name.split(".") if name else []
    for i in range(len(parts) - 1, -1, -1):
        pair = _PAIR.fullmatch(parts[i])
        if pair:
            return int(pair[1]), int(pair[2])
        if parts[i].isdigit():
            block = int(parts[i])
            above = parts[i - 1] if i > 0 else ""
            digits = re.findall(r"\d+", above)
            if digits:
                return int(digits[-1]), block
            if i >= 2 and parts[i - 2].isdigit():
                return int(parts[i - 2]), block
            return None, block
    return None, None


_ATTN_NAME = re.compile(r"attn|attention|excit|(^|_)se($|_)|gate|cbam|eca|context|nonlocal|"
                        r"non_local|coord|squeeze", re.IGNORECASE)
# class-name abbreviations of common attention units: SELayer, SEBlock, SCSEModule, SKConv,
# BAM, PAM_Module / CAM_Module (DANet), CBAM, ECALayer, GCBlock
_ATTN_CLASS = re.compile(r"(^|_)(SE|SK|SCSE|BAM|PAM|CAM|CBAM|ECA|GC|DA|CA|SA)([A-Z_]|$)")
_NOT_ATTN = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Linear,
             nn.modules.conv._ConvNd, nn.Identity)


def candidates(model: nn.Module, recorded: Iterable[str]) -> list[str]:
    """Modules that look like attention but are neither recorded nor inside/above a record."""
    names = list(recorded)
    out = []
    for name, m in model.named_modules():
        if not name or is_activation(m) or isinstance(m, _NOT_ATTN):
            continue  # a norm / dropout / projection named after the attention it follows
        cls = type(m).__name__
        looks = bool(_ATTN_NAME.search(cls) or _ATTN_CLASS.search(cls)
                     or _ATTN_NAME.search(name.split(".")[-1]))
        looks = looks or any(
            w in type(c).__name__.lower() for c in m.children() for w in ("sigmoid", "softmax")
        )
        if not looks:
            continue
        related = any(r == name or r.startswith(name + ".") or name.startswith(r + ".")
                      for r in names)
        if not related and not any(name.startswith(o + ".") for o in out):
            out.append(name)
    return out


_FAST_PATHS = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.TransformerDecoder,
               nn.TransformerDecoderLayer, nn.Transformer)


def fast_path_scope(model: nn.Module, scope: str) -> str:
    """The scope to watch for a weight found in ``scope``: widened to the outermost enclosing
    module that has a fused fast path (``nn.TransformerEncoderLayer`` in eval + no_grad), which
    a watched scope switches off, so later recordings see what the first one saw."""
    parts = scope.split(".") if scope else []
    for i in range(len(parts) + 1):
        name = ".".join(parts[:i])
        if isinstance(model.get_submodule(name), _FAST_PATHS):
            return name
    return scope


def nothing_message(model: nn.Module, looks: list[str]) -> str:
    """The ``NoAttentionError`` message for ``model``, naming modules that look like attention."""
    msg = (f"{type(model).__name__} has no attention attnviz can record: no module of a supported "
           "type (" + ", ".join(supported_types()[:4]) + ", ...; see attnviz.supported_types()) "
           "and no sigmoid or softmax output multiplied into a feature map or used as an "
           "attention map")
    if looks:
        msg += "; modules that look like attention but produced nothing: " + ", ".join(looks[:8])
    return msg


def looks_message(model: nn.Module, looks: list[str]) -> str:
    """The warning for modules that look like attention but gave no record."""
    more = " ..." if len(looks) > 8 else ""
    return (f"{len(looks)} module(s) of {type(model).__name__} look like attention but gave no "
            f"record: {', '.join(looks[:8])}{more} (attnviz.find_attention(model, x).candidates "
            "lists them)")
