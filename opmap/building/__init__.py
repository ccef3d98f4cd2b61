"""building: a :class:`~opmap.planning.planner.Plan` becomes a TensorRT network through ``INetworkDefinition.add_*``.

Owns the backend seam (``backend``: ``tensorrt`` when importable, else ``tensorrt_rtx``; probes; strongly typed
networks), the emit context and network builder (``builder``: every strategy's emit function writes layers through
it), the optimization profile's points (``profile``) and TensorRT's fusion rules as the cost model sees them
(``fusion``).

Imports: ``opmap.loading``, ``opmap.planning`` and the shared small modules. Never ``opmap.checking``.
"""
