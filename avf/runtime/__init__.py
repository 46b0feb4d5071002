"""Running a model, whatever runs it: one :class:`~avf.runtime.runner.Runner` contract, one module per
backend, the table that names them (:mod:`avf.runtime.registry`) and the one scoring loop
(:mod:`avf.runtime.scoring`).

Nothing here imports PyTorch, ONNX Runtime or TensorRT until a runner of that backend is opened,
so a machine with only one runtime installed can import any of it.
"""
