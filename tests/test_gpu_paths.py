"""The GPU paths' own logic, checked without a GPU: ONNX Runtime provider options and the refusal
of a silent provider fallback, the energy meter's start point, jtop's power shapes and failures,
and matching the NVML device to the CUDA device.

Fakes stand in for ONNX Runtime sessions, jtop and NVML only to drive avf's code; none of them
produces a figure that is reported as measured.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from avf.errors import InputError

# ----------------------------------------------------------------------------- ONNX Runtime providers


def test_tensorrt_provider_options_for_int8_dynamic_batch_and_cache(tmp_path):
    from avf.compress.ort_gpu import provider_chain

    chain = provider_chain("tensorrt", "int8", {"rgb": 1024, "audio": 128}, tmp_path, device_id=0)
    name, options = chain[0]
    assert name == "TensorrtExecutionProvider" and [c if isinstance(c, str) else c[0] for c in chain[1:]] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_int8_enable"] is True and options["trt_fp16_enable"] is False
    assert options["trt_profile_min_shapes"] == "rgb:1x1024,audio:1x128"
    assert options["trt_profile_opt_shapes"] == "rgb:8x1024,audio:8x128"
    assert options["trt_profile_max_shapes"] == "rgb:64x1024,audio:64x128"
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_timing_cache_enable"]
    fp16 = provider_chain("tensorrt", "fp16", {"rgb": 1024, "audio": 128}, tmp_path)[0][1]
    assert fp16["trt_fp16_enable"] is True and fp16["trt_int8_enable"] is False
    assert provider_chain("cuda", "fp32", {"rgb": 1024})[0] == ("CUDAExecutionProvider", {"device_id": 0})


class _Session:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


@pytest.mark.parametrize("wanted,got", [("TensorrtExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
                                        ("TensorrtExecutionProvider", ["CPUExecutionProvider"]),
                                        ("CUDAExecutionProvider", ["CPUExecutionProvider"])])
def test_a_silent_provider_fallback_is_refused(wanted, got, tmp_path):
    from avf.compress.ort_gpu import require_first_provider

    with pytest.raises(InputError, match=f"could not start {wanted} and fell back to {got[0]}"):
        require_first_provider(_Session(got), wanted, tmp_path, "onnxruntime-x")
    require_first_provider(_Session([wanted, "CPUExecutionProvider"]), wanted, tmp_path, "onnxruntime-x")


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from avf.compress import quantize
    from avf.compress.export import export_onnx
    from avf.models.zoo import build_model

    root = tmp_path_factory.mktemp("ortgpu")
    torch.manual_seed(0)
    export_onnx(build_model("attend_fusion", 6, width=16, attention_width=16, heads=2).eval(), root / "fp32.onnx",
                1024, 128, {"model": "attend_fusion", "precision": "int8"})
    generator = np.random.default_rng(0)
    quantize.quantize_int8_static(root / "fp32.onnx", root / "model.onnx",
                                  iter([(generator.standard_normal((8, 1024), dtype=np.float32),
                                         generator.standard_normal((8, 128), dtype=np.float32))]), "minmax")
    from avf.compress.pipeline import _restore_metadata

    _restore_metadata(root / "model.onnx", {"model": "attend_fusion", "precision": "int8"})
    return root / "model.onnx"


def test_gpu_session_is_configured_and_checked(int8_onnx, tmp_path, monkeypatch):
    """GpuOnnxModel's wiring: providers asked for with options, the TensorRT graph, the fallback check."""
    import onnx
    import onnxruntime as ort

    from avf.compress import ort_gpu

    created = []

    class FakeSession(_Session):
        def __init__(self, path, options, providers):
            created.append((path, providers))
            super().__init__(reported)

    monkeypatch.setenv("AVF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    reported = ["CPUExecutionProvider"]  # what ONNX Runtime does when libnvinfer is missing
    with pytest.raises(InputError, match="fell back to CPUExecutionProvider"):
        ort_gpu.GpuOnnxModel(int8_onnx, "tensorrt", "onnxruntime-tensorrt")
    path, providers = created[-1]
    assert providers[0][0] == "TensorrtExecutionProvider" and providers[0][1]["trt_int8_enable"] is True
    # TensorRT is given the graph with float biases, cached beside its engines; the artifact is untouched.
    graph = onnx.load(path).graph
    assert path.endswith("model.tensorrt.onnx") and str(tmp_path / "cache") in path
    assert not any(i.data_type == onnx.TensorProto.INT32 for i in graph.initializer)
    assert any(i.data_type == onnx.TensorProto.INT32 for i in onnx.load(str(int8_onnx)).graph.initializer)
    # No TensorRT provider in this onnxruntime at all: named before any session is made.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="install onnxruntime-gpu"):
        ort_gpu.GpuOnnxModel(int8_onnx, "cuda", "onnxruntime-cuda")


# ----------------------------------------------------------------------------- energy meter start point


class _Meter:
    available, reason, source = True, "", "fake"

    def __init__(self, log):
        self.log = log

    def start(self):
        self.log.append("start")

    def stop(self):
        self.log.append("stop")
        return 1.0


def test_energy_meter_starts_after_the_warm_up():
    from avf.deploy.power import measure_with_energy

    log = []
    latency, joules = measure_with_energy(_Meter(log), lambda: log.append("run"), warmup=7, min_iterations=12,
                                          min_seconds=0.0)
    start, stop = log.index("start"), log.index("stop")
    assert log[:start] == ["run"] * 7  # warm-up (engine builds, graph capture) outside the meter
    assert log[start + 1:stop] == ["run"] * latency["iterations"]  # exactly the calls the energy is divided by
    assert latency["warmup"] == 7 and joules == 1.0


def test_bench_divides_energy_over_the_metered_iterations(monkeypatch, tmp_path):
    """benchmark() wires the meter through measure_with_energy: warm-up calls never run while metering."""
    from avf.deploy import bench

    log = []
    meter = _Meter(log)
    meter.close = lambda: log.append("close")
    monkeypatch.setattr(bench, "energy_meter", lambda device: meter)
    monkeypatch.setattr(bench, "load_target", lambda *a, **k: (lambda rgb, audio: log.append("run"), {
        "rgb_dim": 4, "audio_dim": 2, "num_classes": 3, "device": "cpu", "backend": "fake", "precision": "fp32", "model": "m"}))
    target = tmp_path / "t"
    target.mkdir()
    result = bench.benchmark(target, batches=[2], duration=0.0, threads=1)
    single = result["scenarios"]["single-stream"]
    assert log[:20] == ["run"] * 20 and log[20] == "start"
    assert single["energy"]["millijoules_per_inference"] == pytest.approx(1e3 / single["iterations"])
    offline = result["scenarios"]["offline"][0]
    assert offline["energy"]["millijoules_per_inference"] == pytest.approx(1e3 / (offline["batch_latency"]["iterations"] * 2))
    assert log[-1] == "close"


# ----------------------------------------------------------------------------- jtop


def test_jtop_power_shapes_of_both_generations():
    from avf.deploy.power import jtop_total_mw

    # jetson-stats 4.2+: PowerService.get_status() -> {"rail": {...}, "tot": {...}}
    new = {"rail": {"VDD_CPU_GPU_CV": {"volt": 5000, "curr": 400, "power": 2000, "avg": 1900}},
           "tot": {"volt": 5000, "curr": 1000, "power": 5234, "avg": 5100, "name": "VDD_IN"}}
    # older jetson-stats: jetson.power -> (total, rails), total in mW under "cur"
    old = ({"cur": 4321, "avg": 4000}, {"GPU": {"cur": 800, "avg": 790}})
    assert jtop_total_mw(new) == 5234.0 and jtop_total_mw(old) == 4321.0
    assert jtop_total_mw({"rail": {"VDD_IN": {"power": 6000}}}) == 6000.0
    assert jtop_total_mw({"rail": {}}) is None and jtop_total_mw(None) is None


class _Jtop:
    def __init__(self, power):
        self.power, self.observers, self.closed = power, set(), False

    def start(self):
        pass

    def attach(self, observer):
        self.observers.add(observer)

    def detach(self, observer):
        self.observers.discard(observer)

    def close(self):
        self.closed = True

    def tick(self):  # what jtop's reader thread does each interval
        for observer in list(self.observers):
            observer(self)


@pytest.mark.parametrize("power,mw", [
    ({"rail": {}, "tot": {"power": 5000, "avg": 5000}}, 5000),
    (({"cur": 3000, "avg": 3000}, {}), 3000),
])
def test_jtop_meter_samples_and_detaches(power, mw):
    from avf.deploy.power import JtopMeter

    fake = _Jtop(power)
    meter = JtopMeter(factory=lambda: fake)
    assert meter.available
    meter.start()
    fake.tick()
    fake.tick()
    joules = meter.stop()
    assert joules is not None and joules > 0  # mean sampled watts x the run's seconds
    assert meter._samples == [mw, mw] and fake.observers == set()  # observer detached after the run
    meter.close()
    assert fake.closed


def test_jtop_meter_never_kills_the_reader_thread_and_says_why():
    from avf.deploy.power import JtopMeter

    fake = _Jtop({"something": "else"})
    meter = JtopMeter(factory=lambda: fake)
    meter.start()
    fake.tick()  # must not raise inside jtop's thread
    assert meter.stop() is None and "no total power" in meter.reason and fake.observers == set()


def test_jtop_service_down_is_not_available_not_a_crash():
    from avf.deploy.power import JtopMeter

    class JtopException(Exception):
        pass

    class Down(_Jtop):
        def start(self):
            raise JtopException("The jetson_stats.service is not active. Please run:\nsudo systemctl restart jetson_stats.service")

    meter = JtopMeter(factory=lambda: Down(None))
    assert not meter.available and meter.reason.startswith("not available: jtop: The jetson_stats.service is not active")


# ----------------------------------------------------------------------------- NVML device


class _NVMLError(Exception):
    pass


def _fake_nvml(by_uuid=None, by_bus=None):
    return types.SimpleNamespace(
        NVMLError=_NVMLError,
        nvmlDeviceGetHandleByIndex=lambda i: f"index-{i}",
        nvmlDeviceGetHandleByUUID=lambda u: (by_uuid or {}).get(u) or (_ for _ in ()).throw(_NVMLError("not found")),
        nvmlDeviceGetHandleByPciBusId_v2=lambda b: (by_bus or {}).get(b) or (_ for _ in ()).throw(_NVMLError("not found")))


def _fake_cuda(monkeypatch, uuid="8c4b5a1e-0000-4000-8000-000000000002", bus=0x41):
    torch = pytest.importorskip("torch")
    props = types.SimpleNamespace(uuid=uuid, pci_bus_id=bus, pci_device_id=0, pci_domain_id=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)


def test_nvml_device_is_the_cuda_device_not_nvml_index_0(monkeypatch):
    """CUDA_VISIBLE_DEVICES=2: CUDA device 0 is NVML's third GPU; NVML index 0 would be the wrong board."""
    from avf.deploy.power import nvml_handle

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    _fake_cuda(monkeypatch)
    nvml = _fake_nvml(by_uuid={"GPU-8c4b5a1e-0000-4000-8000-000000000002": "gpu-2"})
    assert nvml_handle(nvml) == "gpu-2"
    # No UUID match (e.g. MIG, older driver): the PCI bus id decides.
    nvml = _fake_nvml(by_bus={"00000000:41:00.0": "gpu-2-by-bus"})
    assert nvml_handle(nvml) == "gpu-2-by-bus"
    with pytest.raises(RuntimeError, match="NVML has no device matching CUDA device 0"):
        nvml_handle(_fake_nvml())
