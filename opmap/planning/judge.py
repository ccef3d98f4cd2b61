"""Running rules: fixture resolution by argument name, scopes, outcomes, verdicts."""

from __future__ import annotations

import inspect
import re
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from opmap.planning.equivalence import CONTEXT, NodeView, VerdictMemo, Watch, Watched, WatchedGraph, node_key
from opmap.loading.graph import Graph, Node
from opmap.planning.rewrite import RuleAssertion
from opmap.planning.strategy import SCOPES, FixtureDef, Outcome, Skip, Strategy

_SCOPE_RANK = {s: i for i, s in enumerate(SCOPES)}  # node < graph < session


@dataclass
class Verdict:
    strategy: str
    rule: str  # "id@version"
    kind: str
    outcome: Outcome
    reason: str | None = None
    expression: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)
    source_hash: str | None = None
    location: str | None = None  # file:line of the failing assert or raise

    @property
    def applies(self) -> bool:
        return self.outcome is Outcome.APPLIES

    def copy(self) -> "Verdict":
        return Verdict(self.strategy, self.rule, self.kind, self.outcome, self.reason, self.expression, dict(self.evidence),
                       self.source_hash, self.location)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


class _FixtureFailure(Exception):
    def __init__(self, outcome: Outcome, reason: str, location: str | None = None, exc: BaseException | None = None):
        super().__init__(reason)
        self.outcome, self.reason, self.location, self.exc = outcome, reason, location, exc


class Judge:
    """Evaluates strategies on nodes. One Judge per run (the session scope).

    With a :class:`VerdictMemo`, a verdict is judged once per equivalence class of nodes and copied to the
    others (see :mod:`opmap.planning.equivalence`); rules then see watching wrappers of node, graph and upstream.
    """

    def __init__(self, *, base: dict[str, Any], builtin_fixtures: dict[str, FixtureDef], memo: VerdictMemo | None = None,
                 visible: dict[int, tuple] | None = None) -> None:
        # base values: name -> value, available as session-scoped fixtures ("settings", "backend", ...)
        self._base = dict(base)
        self._builtins = builtin_fixtures
        # rule module globals -> (globals, the fixtures a rule there sees): shared with the judges of sub-graphs
        self.visible = visible if visible is not None else {}
        self._memo = memo
        self._watch = Watch()
        backend = base.get("backend")
        session = (getattr(backend, "name", None), getattr(backend, "version", None), base.get("settings"), hash(base.get("catalog_ops")))
        self._session_key = memo.intern(("session", session)) if memo is not None else None
        self._graph: Graph | None = None
        self._node: Node | None = None
        self._node_key: int | None = None
        self.served = False  # every verdict for the node in scope so far came from the memo, confirmed (see node_key)
        self._cache: dict[str, dict[int, Any]] = {s: {} for s in SCOPES}
        self._finalizers: dict[str, list[Iterator]] = {s: [] for s in SCOPES}
        self._values: dict[str, dict[str, Any]] = {"session": dict(base), "graph": {}, "node": {}}
        self.set_value("upstream", self._values["session"].get("upstream", {}))  # node -> chosen strategy; the planner fills it

    def set_value(self, name: str, value: Any) -> None:
        """A session-scoped base value (the planner's running record of upstream choices, say)."""
        self._values["session"][name] = Watched(value, self._watch) if self._memo is not None and name == "upstream" else value

    # -- scope management ----------------------------------------------------------------------
    @contextmanager
    def graph_scope(self, graph: Graph):
        self._graph = graph
        self._values["graph"] = {"graph": WatchedGraph(graph, self._watch) if self._memo is not None else graph}
        try:
            yield self
        finally:
            self._teardown("node")
            self._teardown("graph")
            self._values["graph"] = {}

    @contextmanager
    def node_scope(self, node: Node, key: int | None = None):
        """``key``: the node's class as the memo interned it, when the caller has it already."""
        self._node = node
        if self._memo is not None:
            self._node_key = key if key is not None else self._memo.intern(node_key(node, self._graph or node._graph))
        self.served = self._memo is not None
        # with a memo, the watching view is made only when a rule is judged rather than served (see _judge)
        self._values["node"] = {} if self._memo is not None else {"node": node}
        try:
            yield self
        finally:
            self._teardown("node")
            self._values["node"] = {}
            self._node = None

    def close(self) -> None:
        for scope in SCOPES:
            self._teardown(scope)

    def _teardown(self, scope: str) -> None:
        gens, self._finalizers[scope] = self._finalizers[scope], []
        for gen in reversed(gens):
            try:
                next(gen)
            except StopIteration:
                pass
            except Exception:  # a failing teardown must not turn a finished verdict into a crash
                pass
        self._cache[scope] = {}

    # -- judging -------------------------------------------------------------------------------
    def judge(self, strat: Strategy, node: Node) -> Verdict:
        """Judge one strategy for the node currently in scope."""
        if self._node is not node:
            with self.node_scope(node):
                return self.judge(strat, node)
        if self._memo is None:
            return self._judge(strat)
        key = (self._session_key, strat.id, strat.source_hash, self._node_key)
        known = self._memo.verdicts.get(key)
        if known is not None and known is not CONTEXT and known[1]:
            return known[0].copy()
        self.served = False
        if known is CONTEXT:
            return self._judge(strat)
        self._watch.dirty = False
        verdict = self._judge(strat)
        if self._watch.dirty or (known is not None and verdict != known[0]):
            self._memo.verdicts[key] = CONTEXT
        else:  # kept after one judgement, served after a second one on another node agrees (see equivalence)
            self._memo.verdicts[key] = (verdict.copy(), known is not None)
        return verdict

    def _judge(self, strat: Strategy) -> Verdict:
        if "node" not in self._values["node"]:
            self._values["node"]["node"] = NodeView(self._node, self._watch)
        verdict = Verdict(strategy=strat.id, rule=strat.ref, kind=strat.kind, outcome=Outcome.APPLIES, source_hash=strat.source_hash)
        try:
            kwargs = {name: self._resolve(name, strat, "node", ()) for name in strat.argnames}
            kwargs.update(strat.params)
        except _FixtureFailure as failure:
            verdict.outcome, verdict.reason, verdict.location = failure.outcome, failure.reason, failure.location
            if isinstance(failure.exc, RuleAssertion):
                verdict.expression, verdict.evidence = failure.exc.expression, failure.exc.evidence
            return verdict
        try:
            result = strat.rule(**kwargs)
        except Skip as exc:
            verdict.outcome, verdict.reason = Outcome.NOT_APPLICABLE, str(exc)
            verdict.location = _location(exc)
        except RuleAssertion as exc:
            verdict.outcome, verdict.reason = Outcome.REJECTED, exc.reason or f"assert {exc.expression}"
            verdict.expression, verdict.evidence, verdict.location = exc.expression, exc.evidence, _location(exc)
        except AssertionError as exc:  # an assert in code that was not rewritten
            verdict.outcome, verdict.reason, verdict.location = Outcome.REJECTED, str(exc) or "assertion failed", _location(exc)
        except Exception as exc:  # a bug in the rule: isolate and report it
            verdict.outcome, verdict.location = Outcome.ERROR, _location(exc)
            verdict.reason = f"{type(exc).__name__}: {exc}".strip()
        else:
            if result is not None:
                verdict.outcome = Outcome.ERROR
                verdict.reason = (
                    f"rule returned {result!r}; a rule accepts by returning nothing and rejects with "
                    "`assert cond, \"reason\"`"
                )
        return verdict

    # -- fixtures ------------------------------------------------------------------------------
    def available(self, strat: Strategy) -> dict[str, FixtureDef]:
        """The built-in fixtures and those of the rule's own module (read once per module: rule modules are loaded
        whole before anything is judged)."""
        scope = strat.rule.__globals__
        known = self.visible.get(id(scope))
        if known is not None and known[0] is scope:
            return known[1]
        visible = dict(self._builtins)
        for value in scope.values():
            fdef = getattr(value, "__opmap_fixture__", None)
            if isinstance(fdef, FixtureDef):
                visible[fdef.name] = fdef
        self.visible[id(scope)] = (scope, visible)
        return visible

    def _resolve(self, name: str, strat: Strategy, requester_scope: str, chain: tuple[str, ...]) -> Any:
        for scope in SCOPES:
            if name in self._values[scope]:
                self._check_scope(name, scope, requester_scope, chain)
                return self._values[scope][name]
        fdef = self.available(strat).get(name)
        if fdef is None:
            names = sorted(set(self.available(strat)) | {k for v in self._values.values() for k in v} | {"node", "graph"})
            raise _FixtureFailure(Outcome.ERROR, f"fixture {name!r} not found (available: {', '.join(names)})")
        if name in chain:
            raise _FixtureFailure(Outcome.ERROR, f"fixture cycle: {' -> '.join(chain + (name,))}")
        self._check_scope(name, fdef.scope, requester_scope, chain)
        cache = self._cache[fdef.scope]
        if id(fdef) in cache:  # a value computed from context marks every judgement that uses it again
            value, context = cache[id(fdef)]
            self._watch.dirty = self._watch.dirty or context
            return value
        outer, self._watch.dirty = self._watch.dirty, False
        try:
            value = self._compute(name, fdef, strat, chain)
        finally:
            context = self._watch.dirty
            self._watch.dirty = outer or context
        cache[id(fdef)] = (value, context)
        return value

    def _compute(self, name: str, fdef: FixtureDef, strat: Strategy, chain: tuple[str, ...]) -> Any:
        kwargs = {arg: self._resolve(arg, strat, fdef.scope, chain + (name,)) for arg in fdef.argnames}
        try:
            if inspect.isgeneratorfunction(fdef.fn):
                gen = fdef.fn(**kwargs)
                value = next(gen)
                self._finalizers[fdef.scope].append(gen)
            else:
                value = fdef.fn(**kwargs)
        except Skip as exc:
            raise _FixtureFailure(Outcome.NOT_APPLICABLE, str(exc), _location(exc)) from None
        except AssertionError as exc:
            reason = getattr(exc, "reason", None) or str(exc) or f"fixture {name} rejected the node"
            raise _FixtureFailure(Outcome.REJECTED, reason, _location(exc), exc) from None
        except _FixtureFailure:
            raise
        except Exception as exc:
            raise _FixtureFailure(Outcome.ERROR, f"fixture {name!r} raised {type(exc).__name__}: {exc}", _location(exc)) from None
        return value

    @staticmethod
    def _check_scope(name: str, scope: str, requester_scope: str, chain: tuple[str, ...]) -> None:
        if _SCOPE_RANK[scope] < _SCOPE_RANK[requester_scope]:
            who = chain[-1] if chain else "rule"
            raise _FixtureFailure(
                Outcome.ERROR,
                f"scope mismatch: {requester_scope}-scoped fixture {who!r} requests {scope}-scoped {name!r}",
            )


_INTERNAL = re.compile(r"/opmap/(loading|planning|building|checking)/")  # opmap's own frames; a rule's location is outside them


def _location(exc: BaseException) -> str | None:
    frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(exc.__traceback__)]  # no source lines read
    for filename, line in reversed(frames):
        if not _INTERNAL.search(filename.replace("\\", "/")):
            return f"{filename}:{line}"
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else None
