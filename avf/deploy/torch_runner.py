"""A checkpoint's model as it would be served from PyTorch: eager or compiled, FP32/FP16/BF16,
and on CUDA optionally replayed from CUDA graphs (one graph per batch size).

CUDA graphs matter for this model family: at batch 1 a fused Attend-Fusion is a handful of
GEMMs, so kernel launch overhead from Python is a large share of the latency. A graph is
captured once per batch size on static input buffers; a call copies the request in, replays
the graph and copies the probabilities out, so measured latency includes both transfers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avf.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16")


def torch_dtype(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def torch_runner(model, device: str, precision: str = "fp32", compile_model: bool = False,
                 cuda_graphs: bool = False, source=None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``run(rgb, audio) -> probabilities`` (float32 numpy) for an eval-mode ``model``.

    Weights and activations are cast to ``precision`` (inputs are cast on the device, outputs
    come back as float32). ``cuda_graphs`` needs a CUDA device; with ``compile_model`` it is
    torch.compile's own "reduce-overhead" mode, otherwise graphs are captured here.
    """
    import torch

    dtype = torch_dtype(precision)
    if cuda_graphs and not str(device).startswith("cuda"):
        raise InputError(source, "CUDA graphs need a CUDA GPU (--device cuda)")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(source, "--device cuda asked for, but PyTorch sees no CUDA GPU here")
    model = model.eval().to(device=device, dtype=dtype)
    if compile_model:
        model = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None)
    elif cuda_graphs:
        return _CudaGraphRunner(model, device, dtype)

    def run(rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            rgb_t = torch.from_numpy(rgb).to(device=device, dtype=dtype)
            audio_t = torch.from_numpy(audio).to(device=device, dtype=dtype)
            return torch.sigmoid(model(rgb_t, audio_t)).float().cpu().numpy()

    return run


class _CudaGraphRunner:
    """Captures ``sigmoid(model(rgb, audio))`` once per batch size and replays it."""

    def __init__(self, model, device: str, dtype):
        self.model, self.device, self.dtype = model, device, dtype
        self.graphs: dict[tuple[int, int, int], tuple] = {}

    def _capture(self, shape: tuple[int, int, int]) -> tuple:
        import torch

        batch, rgb_dim, audio_dim = shape
        rgb = torch.zeros(batch, rgb_dim, device=self.device)
        audio = torch.zeros(batch, audio_dim, device=self.device)

        def forward():
            return torch.sigmoid(self.model(rgb.to(self.dtype), audio.to(self.dtype))).float()

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
