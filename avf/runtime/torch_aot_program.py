"""``--backend torch-aot``: the ``model.pt2`` AOTInductor package of an artifact, loaded without avf's model code.

The package runs on the device kind it was compiled for (its report's ``torch_aot.device``); on CUDA,
``--cuda-graphs`` replays each batch size from a captured graph (the same capture as the PyTorch
backend's), which removes the per-kernel launch cost that dominates batch-1 latency on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.errors import InputError
from avf.runtime.runner import RunnerBase, RunnerFacts, RunOptions, Target


class TorchAotRunner(RunnerBase):
    def __init__(self, path: str | Path, device: str, inputs: dict[str, int], num_classes: int, precision: str,
                 model: str | None = None, cuda_graphs: bool = False, threads: int | None = None,
                 backend: str = "torch-aot"):
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(path, "no compiled package: compress with --backend torch-aot, or build one here with "
                                   "avf-deploy build --backend torch-aot")
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError(path, "the package was compiled for CUDA and PyTorch sees no CUDA GPU here: build one for "
                                   "this machine with avf-deploy build --backend torch-aot")
        if cuda_graphs and device != "cuda":
            raise InputError(path, "CUDA graphs need a package compiled for CUDA (this one is for the CPU)")
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            _probe_load(path)
        try:
            loaded = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:  # a package of another PyTorch or device, or a damaged file
            raise InputError(path, f"cannot load the AOTInductor package ({str(exc).splitlines()[0][:200]}): build "
                                   "it again here with avf-deploy build --backend torch-aot") from None
        self.torch, self.device = torch, device
        self.facts = RunnerFacts(
            backend=backend, device=device, precision=precision, model=model, inputs=inputs, num_classes=num_classes,
            runtime={"package": path.name, "cuda_graphs": cuda_graphs, "threads": torch.get_num_threads()},
            versions={"torch": torch.__version__})
        if cuda_graphs:
            from avf.runtime.pytorch_model import CudaGraphs

            self._forward = CudaGraphs(loaded, device)
        else:
            self._forward = self._eager(loaded)

    def _eager(self, loaded):
        torch, device = self.torch, self.device

        def run(rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = loaded(torch.from_numpy(rgb).to(device), torch.from_numpy(audio).to(device))
                return out.cpu().numpy()

        return run

    def run(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self._forward(np.ascontiguousarray(rgb, np.float32), np.ascontiguousarray(audio, np.float32))


def _probe_load(path: Path) -> None:
    """Load the package once in a child process first: on the one H200 image this project was lent (PyTorch
    2.11.0+cu130), loading a CUDA package crashed the process with a segmentation fault inside
    ``aoti_load_package``; a crash there becomes one error naming the file instead of killing the command."""
    import signal
    import subprocess
    import sys

    code = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise InputError(path, f"loading the AOTInductor package crashes PyTorch here ({name} in aoti_load_package, "
                               "in a probe process): this PyTorch build cannot run it; use another backend "
                               "(onnxruntime-cuda, tensorrt) or another PyTorch")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise InputError(path, f"cannot load the AOTInductor package ({last[:200]}): build it again here with "
                               "avf-deploy build --backend torch-aot")


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    report = target.report
    build = report.get("torch_aot")
    if not build or not build.get("built"):
        raise InputError(target.path, "the artifact has no compiled PyTorch package: compress with --backend "
                                      "torch-aot, or build one with avf-deploy build --backend torch-aot")
    if options.device != build["device"]:
        raise InputError(target.path, f"model.pt2 was compiled for {build['device']} ({build.get('device_name')}), "
                                      f"not {options.device}: pass --device {build['device']}, or build a package "
                                      f"for {options.device} with avf-deploy build --backend torch-aot")
    io = report["io"]["inputs"]
    return TorchAotRunner(target.path / build["file"], build["device"], {name: io[name][1] for name in ("rgb", "audio")},
                          report["num_classes"], build.get("precision") or "unknown", model=report["model"]["name"],
                          cuda_graphs=options.cuda_graphs, threads=options.threads, backend=options.backend)
