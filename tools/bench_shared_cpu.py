"""Training-step and batch-1 latency under a shared CPU: why avf's thread defaults are what they are.

Runs the same workload (an Attend-Fusion-sized FC stack: AdamW steps at batch 256, then eval at
batch 1) in fresh processes under three settings, first on an idle machine and then with one busy
process per core competing for the CPUs:

- ``spin``: all cores, OpenMP's default wait policy (threads spin between parallel regions) --
  what PyTorch does out of the box;
- ``passive``: all cores, ``OMP_WAIT_POLICY=PASSIVE`` -- what ``avf`` sets before torch loads;
- ``one-thread``: ``torch.set_num_threads(1)``.

    python tools/bench_shared_cpu.py -o docs/results/threads

Writes ``shared_cpu.json`` and ``shared_cpu.md`` (ratios matter; absolute times depend on the host).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

WORKLOAD = r"""
import json, sys, time, torch
threads = int(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(1152, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048), torch.nn.ReLU(),
                            torch.nn.Linear(2048, 3862))
optimizer = torch.optim.AdamW(model.parameters())
loss_fn = torch.nn.BCEWithLogitsLoss()
x, y = torch.randn(256, 1152), torch.rand(256, 3862).round()
def step():
    optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
for _ in range(2):
    step()
steps, started = 0, time.perf_counter()
while steps < 3 or time.perf_counter() - started < 3.0:
    step(); steps += 1
train_ms = (time.perf_counter() - started) / steps * 1e3
model.eval(); one = torch.randn(1, 1152)
with torch.no_grad():
    for _ in range(20):
        model(one)
    calls, started = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - started < 2.0:
        model(one); calls += 1
latency_ms = (time.perf_counter() - started) / calls * 1e3
print(json.dumps({"train_step_ms": train_ms, "train_steps": steps, "batch1_ms": latency_ms, "batch1_calls": calls,
                  "threads": torch.get_num_threads()}))
"""

BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_setting(name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    threads = cores()
    if name == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if name == "one-thread":
        threads = 1
    result = subprocess.run([sys.executable, "-c", WORKLOAD, str(threads)], capture_output=True, text=True, env=env,
                            timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"workload failed ({name}): {result.stderr[-500:]}")
    return {"setting": name, **json.loads(result.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/results/threads"))
    args = parser.parse_args()
    settings = ("spin", "passive", "one-thread")
    rows = []
    for load in ("idle", "shared"):
        competitors = []
        if load == "shared":
            competitors = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cores())]
            time.sleep(1.0)
        try:
            for name in settings:
                row = {"load": load, **run_setting(name)}
                rows.append(row)
                print(f"{load:7s} {name:11s} train step {row['train_step_ms']:9.1f} ms   batch 1 {row['batch1_ms']:8.3f} ms",
                      flush=True)
        finally:
            for process in competitors:
                process.kill()
                process.wait()
    with open("/proc/loadavg") as fh:
        loadavg = fh.read().split()[:3]
    record = {"command": "python tools/bench_shared_cpu.py", "cores": cores(), "python": platform.python_version(),
              "machine": platform.machine(), "competitors_when_shared": cores(), "loadavg_at_end": loadavg,
              "method": "fresh process per setting; AdamW step at batch 256 on a 1152-2048-2048-3862 MLP, then "
                        "eval at batch 1; mean over >= 3 s / >= 2 s after warm-up; 'shared' adds one busy "
                        "Python loop per core", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shared_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    base = {(r["load"], r["setting"]): r for r in rows}
    lines = ["# Threads on a shared CPU", "", f"`{record['command']}`; {record['method']}.", "",
             "| load | setting | train step ms | vs one thread | batch-1 ms | vs one thread |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        one = base[(r["load"], "one-thread")]
        lines.append(f"| {r['load']} | {r['setting']} | {r['train_step_ms']:.1f} | {r['train_step_ms'] / one['train_step_ms']:.2f}x "
                     f"| {r['batch1_ms']:.3f} | {r['batch1_ms'] / one['batch1_ms']:.2f}x |")
    (args.out / "shared_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
