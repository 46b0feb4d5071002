"""``--backend pytorch`` / ``torch-compile``: a model as it would be served from PyTorch, eager or compiled,
FP32/FP16/BF16, and on CUDA optionally replayed from CUDA graphs (one graph per batch size).

The same eager forward (:func:`eager_probabilities`) is what the retention gate's FP32 reference and
training's validation score, so a checkpoint is measured and scored through one code path.

CUDA graphs matter for this model family: at batch 1 a fused Attend-Fusion is a handful of
GEMMs, so kernel launch overhead from Python is a large share of the latency. A graph is
captured once per batch size on static input buffers; a call copies the request in, replays
the graph and copies the probabilities out, so measured latency includes both transfers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from avf.errors import InputError
from avf.runtime.runner import RunnerBase, RunnerFacts, RunOptions, Target

PRECISIONS = ("fp32", "fp16", "bf16")


def torch_dtype(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def eager_probabilities(model, device=None, dtype=None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``run(rgb, audio) -> probabilities`` (float32 numpy) through ``model``'s forward, as it is.

    Inputs are moved to ``device`` and cast to ``dtype`` (None: left as they are); the model is not
    touched, so a model being trained can be scored without being moved or cast.
    """
    import torch

    def run(rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            rgb_t = torch.from_numpy(rgb).to(device=device, dtype=dtype)
            audio_t = torch.from_numpy(audio).to(device=device, dtype=dtype)
            return torch.sigmoid(model(rgb_t, audio_t)).float().cpu().numpy()

    return run


class PyTorchRunner(RunnerBase):
    """An eval-mode ``model`` on ``device`` in ``precision``: eager, torch.compile'd, or from CUDA graphs.

    Weights and activations are cast to ``precision`` (inputs are cast on the device, outputs come
    back as float32). ``cuda_graphs`` needs a CUDA device; with ``compile_model`` it is
    torch.compile's own "reduce-overhead" mode, otherwise graphs are captured here.
    """

    def __init__(self, model, device: str = "cpu", precision: str = "fp32", compile_model: bool = False,
                 cuda_graphs: bool = False, source: str | Path | None = None, backend: str | None = None,
                 name: str | None = None):
        import torch

        dtype = torch_dtype(precision)
        if cuda_graphs and not str(device).startswith("cuda"):
            raise InputError(source, "CUDA graphs need a CUDA GPU (--device cuda)")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise InputError(source, "--device cuda asked for, but PyTorch sees no CUDA GPU here")
        self.facts = RunnerFacts(
            backend=backend or ("torch-compile" if compile_model else "pytorch"), device=str(device), precision=precision,
            model=name or getattr(model, "name", None), inputs={"rgb": model.rgb_dim, "audio": model.audio_dim},
            num_classes=model.num_classes, runtime={"cuda_graphs": cuda_graphs}, versions={"torch": torch.__version__})
        model = model.eval().to(device=device, dtype=dtype)
        if compile_model:
            model = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None)
        if cuda_graphs and not compile_model:
            self._forward = CudaGraphs(lambda rgb, audio: torch.sigmoid(model(rgb.to(dtype), audio.to(dtype))).float(),
                                       device)
        else:
            self._forward = eager_probabilities(model, device, dtype)

    def run(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self._forward(rgb, audio)


class CudaGraphs:
    """Captures ``forward(rgb, audio) -> float32 probabilities`` (tensors on ``device``) once per batch size and
    replays it: the PyTorch backend's model and the torch-aot backend's compiled package alike."""

    def __init__(self, forward, device: str):
        self.forward, self.device = forward, device
        self.graphs: dict[tuple[int, int, int], tuple] = {}

    def _capture(self, shape: tuple[int, int, int]) -> tuple:
        import torch

        batch, rgb_dim, audio_dim = shape
        rgb = torch.zeros(batch, rgb_dim, device=self.device)
        audio = torch.zeros(batch, audio_dim, device=self.device)

        def forward():
            return self.forward(rgb, audio)

        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
                for _ in range(3):
                    forward()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward()
        return graph, rgb, audio, out

    def __call__(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        import torch

        shape = (rgb.shape[0], rgb.shape[1], audio.shape[1])
        if shape not in self.graphs:
            self.graphs[shape] = self._capture(shape)
        graph, static_rgb, static_audio, out = self.graphs[shape]
        with torch.inference_mode():
            static_rgb.copy_(torch.from_numpy(rgb))
            static_audio.copy_(torch.from_numpy(audio))
            graph.replay()
            return out.cpu().numpy()


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    """A checkpoint's model (its payload already read and checked) on the asked device and precision."""
    import torch

    from avf.train.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(target.payload, target.path)
    if options.threads:
        torch.set_num_threads(options.threads)
    return PyTorchRunner(model, options.device, options.precision or PRECISIONS[0],
                         compile_model=options.backend == "torch-compile", cuda_graphs=options.cuda_graphs,
                         source=target.path, backend=options.backend, name=target.payload["model"]["name"])
