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

    def close(self) -> None:
        pass


def measure_with_energy(meter: EnergyMeter, run, warmup: int, **timing) -> tuple[dict, float | None]:
    """Latency of ``run`` (see :func:`avf.deploy.latency.measure_latency`) and the joules it took.

    The warm-up (engine builds, graph capture, compilation, caches) runs first and outside the
    meter; the meter covers exactly the timed iterations the energy is divided by.
    """
    from avf.deploy.latency import measure_latency

    for _ in range(warmup):
        run()
    if meter.available:
        meter.start()
    latency = measure_latency(run, warmup=0, **timing)
    joules = meter.stop() if meter.available else None
    latency["warmup"] = warmup
    return latency, joules


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


def nvml_handle(pynvml, cuda_device: int | None = None):
    """The NVML handle of the GPU that CUDA (PyTorch, ONNX Runtime, TensorRT) calls ``cuda_device``.

    NVML numbers GPUs its own way and ignores ``CUDA_VISIBLE_DEVICES``, so NVML index 0 is not
    necessarily CUDA device 0. The device is matched by UUID (``nvmlDeviceGetHandleByUUID``), else
    by PCI bus id (``nvmlDeviceGetHandleByPciBusId_v2``). Raises RuntimeError when neither is known.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible to PyTorch, so the NVML device cannot be matched")
    index = torch.cuda.current_device() if cuda_device is None else cuda_device
    props = torch.cuda.get_device_properties(index)
    tried = []
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        text = str(uuid)
        text = text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(text)
        except pynvml.NVMLError as exc:
            tried.append(f"UUID {text}: {exc}")
    if getattr(props, "pci_bus_id", None) is not None:
        bus_id = f"{getattr(props, 'pci_domain_id', 0):08x}:{props.pci_bus_id:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id)
        except pynvml.NVMLError as exc:
            tried.append(f"PCI bus id {bus_id}: {exc}")
    raise RuntimeError(f"NVML has no device matching CUDA device {index} ({'; '.join(tried) or 'no UUID or PCI bus id'})")


class NvmlMeter(EnergyMeter):
    source = "NVML nvmlDeviceGetTotalEnergyConsumption (whole GPU board of the CUDA device, matched by UUID)"

    def __init__(self, cuda_device: int | None = None):
        super().__init__()
        try:
            import pynvml
        except ImportError:
            self.reason = "not available: nvidia-ml-py is not installed (pip install 'avf[gpu]')"
            return
        try:
            pynvml.nvmlInit()
            self._handle = nvml_handle(pynvml, cuda_device)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except (pynvml.NVMLError, RuntimeError) as exc:
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


def jtop_total_mw(power) -> float | None:
    """Total board power in mW from jtop's ``.power``, whatever jetson-stats version wrote it.

    * current jetson-stats (4.x ``jtop/core/power.py``, ``PowerService.get_status``):
      ``{"rail": {name: {...}}, "tot": {"power": mW, "avg": mW, ...}}``, ``tot`` being VDD_IN or
      POM_5V_IN, or the sum of the rails.
    * older jetson-stats (``jtop.power`` in 3.x): a tuple ``(total, rails)`` with
      ``total = {"cur": mW, "avg": mW}``.
    * a dict with rails but no total: the VDD_IN (Orin) or POM_5V_IN (Xavier/Nano) rail.
    None when none of these is there.
    """
    if isinstance(power, (tuple, list)) and len(power) == 2 and isinstance(power[0], dict):
        total = power[0]
        value = total.get("power", total.get("cur"))
        return None if value is None else float(value)
    if isinstance(power, dict):
        total = power.get("tot")
        if isinstance(total, dict) and total.get("power", total.get("cur")) is not None:
            return float(total.get("power", total.get("cur")))
        rails = power.get("rail", power)
        for name in ("VDD_IN", "POM_5V_IN"):
            rail = rails.get(name) if isinstance(rails, dict) else None
            if isinstance(rail, dict) and rail.get("power", rail.get("cur")) is not None:
                return float(rail.get("power", rail.get("cur")))
    return None


class JtopMeter(EnergyMeter):
    source = "jtop (jetson-stats) total board power VDD_IN, mean of samples during the run x time"

    def __init__(self, factory=None):
        super().__init__()
        if factory is None:
            try:
                from jtop import jtop as factory
            except ImportError:
                self.reason = "not available: jetson-stats (jtop) is not installed"
                return
        try:  # jtop raises JtopException when its service is inactive or of another version
            self._jtop = factory()
            self._jtop.start()
        except Exception as exc:
            self.reason = f"not available: jtop: {' '.join(str(exc).split())}"
            return
        self._observer = None
        self.available, self.reason = True, ""

    def _sample(self, jetson) -> None:
        # Runs on jtop's reader thread: an exception here would end that thread silently, so never raise.
        try:
            value = jtop_total_mw(jetson.power)
        except Exception as exc:
            self._errors.append(f"{type(exc).__name__}: {exc}")
            return
        if value is None:
            self._errors.append(f"no total power in jtop's power data ({type(jetson.power).__name__})")
        else:
            self._samples.append(value)

    def start(self) -> None:
        import time

        self._samples, self._errors = [], []
        self._observer = self._sample
        self._jtop.attach(self._observer)
        self._t0 = time.perf_counter()

    def stop(self) -> float | None:
        import time

        elapsed = time.perf_counter() - self._t0
        if self._observer is not None:
            self._jtop.detach(self._observer)
            self._observer = None
        if not self._samples:
            self.reason = ("not available: no jtop samples during the run"
                           + (f" ({self._errors[0]})" if self._errors else " (run shorter than jtop's interval?)"))
            return None
        return sum(self._samples) / len(self._samples) / 1e3 * elapsed  # mW -> W, x s

    def close(self) -> None:
        try:
            self._jtop.close()
        except Exception:
            pass


def energy_meter(device: str) -> EnergyMeter:
    """The best real meter for ``device`` ('cpu' or 'cuda') on this machine."""
    if device == "cuda":
        return JtopMeter() if is_jetson() else NvmlMeter()
    meter = RaplMeter()
    return meter
