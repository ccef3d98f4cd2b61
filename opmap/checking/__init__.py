"""checking: whether a built network computes what PyTorch computes, and what it is estimated to cost.

Owns the reference interpreter that executes a built network layer by layer in PyTorch (``interpreter``, sampling
formulas in ``sampling``), verification against the exported program and input drawing (``verify``), discrete
outputs kept exact under reduced precision (``discrete``), INT8 calibration and placement (``int8``: it measures
ranges through the interpreter), the cost model (``costmodel``: it sizes every layer by running the interpreter),
running a strategy's examples (``examples``) and the differential fuzzer (``fuzz``).

Imports: ``opmap.loading``, ``opmap.planning``, ``opmap.building`` and the shared small modules.
"""
