"""Energy meters: read a real counter around a timed run, or say plainly why none is available.

* NVIDIA discrete GPUs: NVML's total-energy counter (millijoules since driver load).
* Jetson: jtop (jetson-stats) total board power (VDD_IN), sampled by its own service.
* x86: Linux RAPL package energy (``/sys/class/powercap/intel-rapl:0/energy_uj``) when readable.
"""

from __future__ import annotations

from pathlib import Path

RAPL = Path("/sys/class/powercap/intel-rapl:0")


class EnergyMeter:
    """``start()`` then ``stop()`` -> joules; ``available`` False with ``reason`` when no meter."""

    source = "none"

    def __init__(self):
        self.available, self.reason = False, "not available"

    def start(self) -> None:
        pass

    def stop(self) -> float | None:
        return None


class RaplMeter(EnergyMeter):
    source = "Linux RAPL package-0 energy counter (whole CPU package, not only this process)"

    def __init__(self):
        super().__init__()
        counter = RAPL / "energy_uj"
        if not counter.exists():
            self.reason = f"not available: no {RAPL} (no RAPL here: a virtual machine or not an Intel/AMD host)"
            return
        try:
            int(counter.read_text())
        except (OSError, ValueError) as exc:
            self.reason = f"not available: {counter} is not readable ({exc.strerror if isinstance(exc, OSError) else exc})"
            return
        self.available, self.reason = True, ""
        self._max = int((RAPL / "max_energy_range_uj").read_text()) if (RAPL / "max_energy_range_uj").exists() else None

    def start(self) -> None:
        self._start = int((RAPL / "energy_uj").read_text())

    def stop(self) -> float:
        end = int((RAPL / "energy_uj").read_text())
        delta = end - self._start
        if delta < 0 and self._max:  # the counter wrapped
            delta += self._max
        return delta / 1e6


class NvmlMeter(EnergyMeter):
    source = "NVML nvmlDeviceGetTotalEnergyConsumption (whole GPU board)"

    def __init__(self, index: int = 0):
        super().__init__()
        try:
            import pynvml
        except ImportError:
            self.reason = "not available: nvidia-ml-py is not installed (pip install 'avf[gpu]')"
            return
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError as exc:
            self.reason = f"not available: NVML: {exc}"
            return
        self._nvml = pynvml
        self.available, self.reason = True, ""

    def start(self) -> None:
        self._start = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def stop(self) -> float:
        return (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start) / 1e3


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


class JtopMeter(EnergyMeter):
    source = "jtop (jetson-stats) total board power VDD_IN, mean of samples during the run x time"

    def __init__(self):
        super().__init__()
        try:
            from jtop import jtop
        except ImportError:
            self.reason = "not available: jetson-stats (jtop) is not installed"
            return
        self._jtop = jtop()
        self._jtop.start()
        self.available, self.reason = True, ""

    def start(self) -> None:
        import time

        self._t0, self._samples = time.perf_counter(), []
        self._jtop.attach(lambda j: self._samples.append(j.power["tot"]["power"]))

    def stop(self) -> float | None:
        import time

        elapsed = time.perf_counter() - self._t0
        if not self._samples:
            return None
        return sum(self._samples) / len(self._samples) / 1e3 * elapsed  # mW -> W, x s


def energy_meter(device: str) -> EnergyMeter:
    """The best real meter for ``device`` ('cpu' or 'cuda') on this machine."""
    if device == "cuda":
        return JtopMeter() if is_jetson() else NvmlMeter()
    meter = RaplMeter()
    return meter
