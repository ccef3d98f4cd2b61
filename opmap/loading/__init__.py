"""loading: an untrusted model file (or a callable) becomes a :class:`~opmap.loading.graph.Graph`.

Owns the archive gate (``archive``: what a file may contain before anything reads it), the safe ``.pt2`` loader
(``safeload``), the grammar of symbolic size expressions (``symexpr``), capture into ATen (``capture``: torch.export,
TorchScript, functionalization of in-place writes in ``inplace``, autocast regions inlined), the graph data types
(``graph``) and the export's shape facts (``shapefacts``).

Imports: nothing of opmap's but the shared small modules (``opmap.errors``, ``opmap.grammar``, ``opmap.native``, ...).
"""
