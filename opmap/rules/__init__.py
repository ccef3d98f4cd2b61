"""Built-in rules, one module per op family. Order here is collection order."""

BUILTIN_MODULES: list[str] = [
    "plumbing",
    "elementwise",
    "activations",
    "reductions",
    "shape",
    "creation",
    "indexing",
    "linalg",
    "conv",
    "norm",
    "attention",
    "nonzero",
    "random_pool",
    "scatter_reduce",
    "compaction",
    "math_extra",
    "shape_extra",
    "no_network",
    "custom",
    "decomposition",
]
