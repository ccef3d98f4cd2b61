"""Strategies and their rules, pytest-style.

A rule is a plain function named ``rule_*``, decorated with :func:`strategy`. It
receives fixtures by argument name (``node``, ``graph``, ``backend``, ``bounds``,
``settings`` and any user fixture) and rejects the strategy for a node with
``assert cond, "reason"``. Returning normally means the strategy APPLIES.

    @strategy("nonzero/static-bound", op="aten.nonzero.default", kind="decompose")
    def rule_nonzero_static_bound(node, bounds):
        assert bounds.upper(node.out.shape[0]) is not None, "no static upper bound"

Outcomes: APPLIES; REJECTED (an assert failed, its message is the reason);
NOT_APPLICABLE (the rule called :func:`skip`); ERROR (anything else: a bug in the
rule, isolated and reported, never a crash of the run).
"""

from __future__ import annotations

import hashlib
import inspect
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property, lru_cache
from typing import Any, Callable, Iterable, Sequence

from opmap.errors import RuleDefinitionError

KINDS = ("direct", "approximate", "decompose", "plugin")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.\-]*$")
WILDCARD = "*"  # a strategy that may apply to any op (e.g. PyTorch's own decomposition)


class Outcome(str, Enum):
    APPLIES = "APPLIES"
    REJECTED = "REJECTED"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    ERROR = "ERROR"

    def __str__(self) -> str:
        return self.value


class Skip(Exception):
    """Raised by :func:`skip`: the strategy does not apply here, for a reason that is not a failure."""


def skip(reason: str) -> None:
    """Mark the strategy NOT_APPLICABLE for this node (e.g. the backend lacks the layer)."""
    raise Skip(reason)


@dataclass(frozen=True)
class Example:
    """A call the rule must judge a certain way; run by ``opmap rules test``."""

    fn: Callable
    inputs: tuple
    expect: str  # "accept" | "reject"
    backend: str | None = None
    match: str | None = None  # for rejects: a substring the reason must contain
    node: str | None = None  # which node of the exported graph to judge (default: first of the op)
    settings: dict = field(default_factory=dict)
    dynamic_shapes: Any = None
    decompose: bool = False  # export, then lower to Core ATen (``run_decompositions()``), as users do before saving
    extra: bool = False  # one more call, exercising another listed overload: the all-dynamic test samples these


def accept(fn: Callable, *inputs: Any, backend: str | None = None, node: str | None = None, dynamic_shapes: Any = None,
           decompose: bool = False, **settings: Any) -> Example:
    """An example the rule must judge APPLIES; ``decompose``: judged on the Core ATen graph of the export (where ops
    such as ``_softmax``, ``_to_copy`` or ``_native_batch_norm_legit_no_training`` first appear)."""
    return Example(fn, inputs, "accept", backend, None, node, settings, dynamic_shapes, decompose)


def reject(
    fn: Callable,
    *inputs: Any,
    match: str | None = None,
    backend: str | None = None,
    node: str | None = None,
    dynamic_shapes: Any = None,
    decompose: bool = False,
    **settings: Any,
) -> Example:
    """An example the rule must judge REJECTED or NOT_APPLICABLE (reason containing ``match``)."""
    return Example(fn, inputs, "reject", backend, match, node, settings, dynamic_shapes, decompose)


@dataclass
class Strategy:
    """One way of mapping an op onto TensorRT: a rule (when) plus an emit function (how)."""

    id: str  # "pack/slug" or "pack/slug[param-id]", immutable once published
    ops: tuple[str, ...]
    kind: str
    version: int
    rule: Callable
    doc: str = ""
    tags: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # parametrize values bound to this variant
    emit_fn: Callable | None = None
    expand_fn: Callable | None = None  # (node, graph) -> (sub-graph, argument refs): planned node by node
    expand_keyed: bool = False  # the expansion is a function of the node's class (see :meth:`expand`)
    origin: str = "builtin"  # builtin | user | pack:<name>
    source_path: str | None = None
    contract: str | None = None  # how the strategy changes the node's output contract, if it does
    spec: str = ""  # what a rule factory bound into this rule (checks, layer): part of the source hash
    no_reject: str | None = None  # why the rule has no reject example (it refuses nothing a graph can hold)
    no_accept: str | None = None  # why the rule has no accept example (what it waits for)
    _hash: str | None = field(default=None, repr=False)

    @property
    def pack(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.rule.__name__

    @property
    def ref(self) -> str:
        """``id@version``, as stored in audit records."""
        return f"{self.id}@{self.version}"

    @property
    def argnames(self) -> list[str]:
        return [p for p in _parameters(self.rule) if p not in self.params]

    @property
    def source_hash(self) -> str:
        if self._hash is None:
            from opmap.planning import reach

            # everything the rule, emit and expand functions run inside opmap (README, "Measurements"): an edited
            # shared helper changes the hash of every strategy that calls it
            roots = [self.rule, self.emit_fn, self.expand_fn]
            text = reach.builtin_digest(self.id, roots) if reach.builtin(roots) else reach.digest(roots)
            parts = [text, repr(sorted(self.params.items(), key=str))]
            parts.append(repr((self.ops, self.kind, self.version, self.contract, self.spec)))
            self._hash = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
        return self._hash

    def matches(self, op: str) -> bool:
        return op in self.ops or WILDCARD in self.ops

    def emit(self, fn: Callable) -> Callable:
        """Decorator: the layer-emitting half of the strategy, public API for rule authors.

        ``@rule_x.emit`` registers ``fn(ctx, node)``, called by the builder for every node planned with this strategy:
        ``ctx`` is an :class:`opmap.EmitContext` (inputs by schema name, constants, casts, layer helpers, symbolic
        sizes), ``node`` the same node the rule judged. It returns the node's output ITensor (a list for several
        outputs). A strategy without an emit function can be judged but never built (``opmap build`` plans only with
        strategies that emit). The emit function's source is part of the strategy's source hash."""
        self.emit_fn = fn
        self._hash = None
        return fn

    def expand(self, fn: Callable | None = None, *, keyed: bool = False) -> Callable:
        """Decorator: the strategy replaces the node by a sub-graph that the planner plans node by node.

        ``fn(node, graph)`` returns ``(sub-graph, argument refs)``; the builder emits the sub-graph's nodes with their own
        chosen strategies (how ``torch/decomposition`` works). An alternative to :meth:`emit`, not a companion.

        ``keyed=True`` (``@rule_x.expand(keyed=True)``) promises that the sub-graph depends only on what a node-local rule
        may read (op, arguments with tensors by meta, outputs; :func:`opmap.planning.equivalence.node_key`) and the graph's
        symbol ranges, and returns the same sub-graph object for nodes of one class: the planner then expands once per
        class. The refs must be the node's tensor arguments in argument order (:meth:`Node.tensor_refs`); where they are
        not, the planner calls ``fn`` for every node as it does without the promise."""
        def register(f: Callable) -> Callable:
            self.expand_fn, self.expand_keyed, self._hash = f, keyed, None
            return f

        return register(fn) if fn is not None else register

    # A Strategy stands in for the decorated function in its module, so it stays callable.
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.rule(*args, **kwargs)


@dataclass
class StrategyFamily:
    """What ``@strategy`` returns when combined with ``@parametrize``: one Strategy per value."""

    variants: list[Strategy]

    def emit(self, fn: Callable) -> Callable:
        for v in self.variants:
            v.emit(fn)
        return fn

    def __iter__(self):
        return iter(self.variants)


@lru_cache(maxsize=None)
def _parameters(fn: Callable) -> tuple[str, ...]:
    """A rule's parameter names (inspect.signature is slow, and the planner asks once per judgement)."""
    return tuple(inspect.signature(fn).parameters)


def strategy(
    id: str,
    *,
    op: str | Sequence[str],
    kind: str,
    version: int = 1,
    tags: Iterable[str] = (),
    examples: Iterable[Example] = (),
    contract: str | None = None,
    spec: str = "",
    no_reject: str | None = None,
    no_accept: str | None = None,
) -> Callable[[Callable], Strategy | StrategyFamily]:
    """Declare a strategy: ``id`` is ``pack/slug``; ``op`` an ATen overload key (``"aten.relu.default"``, or a custom
    op's ``"mylib.soft_clip.default"``) or a list of them; ``kind`` one of direct, decompose, approximate, plugin.

    ``contract``: how the strategy changes the node's outputs (padding, an extra output added with
    ``ctx.extra_output``), shown by ``suggest`` and ``build`` and stored in the sidecar; None when it keeps them.
    ``examples``: :func:`accept` / :func:`reject` calls that ``opmap rules test`` runs. Add the layers with
    ``@rule_x.emit`` (see :meth:`Strategy.emit`)."""
    if not _ID_RE.match(id):
        raise RuleDefinitionError(f"strategy id {id!r} must look like 'pack/slug' (lowercase letters, digits, '-', '_', '.')")
    if kind not in KINDS:
        raise RuleDefinitionError(f"strategy {id}: kind {kind!r} is not one of {', '.join(KINDS)}")
    ops = (op,) if isinstance(op, str) else tuple(op)
    if not ops:
        raise RuleDefinitionError(f"strategy {id}: op must name at least one ATen overload")
    if not isinstance(version, int) or version < 1:
        raise RuleDefinitionError(f"strategy {id}: version must be a positive integer")

    def decorate(fn: Callable) -> Strategy | StrategyFamily:
        if not callable(fn) or not getattr(fn, "__name__", "").startswith("rule_"):
            raise RuleDefinitionError(
                f"strategy {id}: decorates {getattr(fn, '__name__', fn)!r}; rule functions must be named rule_*"
            )
        doc = inspect.cleandoc(fn.__doc__ or "")
        base = Strategy(
            id=id, ops=ops, kind=kind, version=version, rule=fn, doc=doc, tags=tuple(tags),
            examples=tuple(examples), contract=contract, spec=spec, no_reject=no_reject,
            no_accept=no_accept,
        )
        marks: list[tuple[str, list, list[str]]] = list(reversed(getattr(fn, "__opmap_parametrize__", [])))
        if not marks:
            return base
        variants = [base]
        for argname, values, ids in marks:
            if argname not in inspect.signature(fn).parameters:
                raise RuleDefinitionError(f"strategy {id}: parametrize({argname!r}) but {fn.__name__} takes no such argument")
            variants = [
                replace(v, id=_variant_id(v.id, vid), params={**v.params, argname: value})
                for v in variants
                for value, vid in zip(values, ids)
            ]
        return StrategyFamily(variants)

    return decorate


def _variant_id(base: str, vid: str) -> str:
    if base.endswith("]"):
        return f"{base[:-1]}-{vid}]"
    return f"{base}[{vid}]"


def parametrize(argname: str, values: Sequence[Any], ids: Sequence[str] | None = None) -> Callable[[Callable], Callable]:
    """Like ``pytest.mark.parametrize``: one strategy variant per value, id ``pack/slug[value-id]``."""
    values = list(values)
    ids = [str(i) for i in ids] if ids is not None else [_value_id(v) for v in values]
    if len(ids) != len(values):
        raise RuleDefinitionError(f"parametrize({argname!r}): {len(ids)} ids for {len(values)} values")

    def mark(fn: Callable) -> Callable:
        if isinstance(fn, (Strategy, StrategyFamily)):
            raise RuleDefinitionError(f"parametrize({argname!r}) must sit below @strategy, next to the function")
        fn.__opmap_parametrize__ = getattr(fn, "__opmap_parametrize__", []) + [(argname, values, ids)]  # type: ignore[attr-defined]
        return fn

    return mark


def _value_id(value: Any) -> str:
    text = str(value).lower()
    return re.sub(r"[^a-z0-9_.-]+", "-", text).strip("-") or "v"


# -- fixtures ---------------------------------------------------------------------------------

SCOPES = ("node", "graph", "session")


@dataclass
class FixtureDef:
    name: str
    fn: Callable
    scope: str
    origin: str  # module that defined it

    @cached_property
    def argnames(self) -> list[str]:
        return list(inspect.signature(self.fn).parameters)


def fixture(fn: Callable | None = None, *, scope: str = "node", name: str | None = None):
    """Declare a fixture (``@fixture`` or ``@fixture(scope="graph")``); generators may ``yield`` once."""
    if scope not in SCOPES:
        raise RuleDefinitionError(f"fixture scope {scope!r} is not one of {', '.join(SCOPES)}")

    def decorate(f: Callable) -> Callable:
        f.__opmap_fixture__ = FixtureDef(name or f.__name__, f, scope, getattr(f, "__module__", "?"))  # type: ignore[attr-defined]
        return f

    return decorate(fn) if fn is not None else decorate
