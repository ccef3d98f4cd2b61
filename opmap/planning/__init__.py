"""planning: which strategy each node of a :class:`~opmap.loading.graph.Graph` gets, and why every other was rejected.

Owns the declaration of strategies and fixtures (``strategy``: ``@strategy``, ``@fixture``, ``accept``/``reject``),
rule collection from packs and ``rule_*`` files (``collect``), the built-in fixtures rules receive (``fixtures``),
running rules with pytest-style fixtures and outcomes (``judge``), node equivalence and verdict memos
(``equivalence``), sub-graph rewrites (``rewrite``), the planner that picks the cheapest accepted strategy per node
within the accuracy budget (``planner``), and the on-disk caches and source texts that key them (``diskcache``,
``sourcetext``).

Imports: ``opmap.loading`` and the shared small modules. Never ``opmap.building``/``opmap.checking``: a plan is data; the
planner is *given* a backend profile (a type-only import) and never builds.
"""
