"""Probe: the paired-bootstrap lower bound of GAP retention for the 6-epoch search's edge candidates."""
import json, sys, time
from pathlib import Path
from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
from avf.train.data import load_training_data
from avf.runtime.pytorch_model import PyTorchRunner
from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner
from avf.compress.retention import compare_on_data
from avf.compress.report import cpu_model_name
payload = load_checkpoint("/work/runs/tr/run/best.pt")
model = model_from_checkpoint(payload, "/work/runs/tr/run/best.pt")
data = {role: load_training_data(f"/work/runs/tr/stores/{role}", payload["num_classes"]) for role in ("select", "test")}
for cid in sys.argv[1:]:
    folder = Path("/work/runs/tr/tune6/candidates") / cid
    onnx = folder / cpu_model_name({p.name for p in folder.iterdir()})
    for role, d in data.items():
        t = time.time()
        c = compare_on_data(PyTorchRunner(model), OnnxRuntimeCpuRunner(onnx, threads=2), d)
        print(json.dumps({"id": cid, "data": role, "videos": c["videos"], "retention": round(c["ratios"]["gap"], 5),
                          "lower95": round(c["gap_bound"]["lower"], 5), "s": round(time.time() - t, 1)}), flush=True)
