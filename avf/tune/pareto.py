"""The Pareto front: candidates no other candidate beats on both retention and a cost.

Two fronts, as the issue asks: GAP retention against latency (p50, measured or predicted) and
against model size. The PNG marks predicted costs as such in its axis label.
"""

from __future__ import annotations

from pathlib import Path

from avf.atomic import atomic_file

COSTS = {"latency": ("latency_p50_ms", "p50 latency (ms)"), "size": ("size_bytes", "model.onnx (MB)")}


def cost_value(record: dict, cost: str) -> float:
    return record["cost"][COSTS[cost][0]]


def front(records: list[dict], cost: str) -> list[dict]:
    """Non-dominated records (lower cost, higher retention), by increasing cost."""
    scored = [r for r in records if r.get("retention") is not None]
    ordered = sorted(scored, key=lambda r: (cost_value(r, cost), -r["retention"]))
    out, best = [], float("-inf")
    for record in ordered:
        if record["retention"] > best:
            out.append(record)
            best = record["retention"]
    return out


def dominates(record: dict, retention: float, latency_ms: float) -> bool:
    """Whether ``record`` matches or beats a (retention, latency) point on both."""
    return record["retention"] >= retention and record["cost"]["latency_p50_ms"] <= latency_ms


def plot(records: list[dict], out: Path, min_retention: float, status: str, chosen: str | None) -> bool:
    """pareto.png: retention against latency and against size; False when matplotlib is missing or
    no candidate has a score yet (a budget spent before the first one: nothing to draw)."""
    if not any(r.get("retention") is not None for r in records):
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, cost in zip(axes, ("latency", "size")):
        scale = 1e-6 if cost == "size" else 1.0
        for precision in sorted({r["precision"] for r in records}):
            points = [r for r in records if r["precision"] == precision and r.get("retention") is not None]
            axis.scatter([cost_value(r, cost) * scale for r in points], [r["retention"] for r in points], s=18,
                         label=precision, alpha=0.7)
        line = front(records, cost)
        axis.step([cost_value(r, cost) * scale for r in line], [r["retention"] for r in line], where="post",
                  color="black", linewidth=1, label="Pareto front")
        for record in records:
            if record["id"] == chosen:
                axis.scatter([cost_value(record, cost) * scale], [record["retention"]], s=120, facecolors="none",
                             edgecolors="red", label="chosen")
        axis.axhline(min_retention, color="grey", linestyle="--", linewidth=0.8)
        label = COSTS[cost][1] + (f" [{status}]" if cost == "latency" else "")
        axis.set_xlabel(label)
        axis.set_ylabel("GAP retention (selection data)")
        axis.set_xscale("log")
        axis.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(out, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return True
