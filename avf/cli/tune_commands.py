"""``avf tune``: the best compressed artifact for a device profile, under accuracy and latency budgets."""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from avf.cli.json_output import emit, json_option
from avf.cli.options import config_option, option
from avf.cli.progress import stderr
from avf.errors import ExitCode
from avf.tune.search import TuneOptions

_stdout = Console()


_option = partial(option, TuneOptions)  # every option's default and limits are TuneOptions' own


def tune_command(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `avf train`."),
    profile: str = _option("profile", "--profile", "-p", default=None,
                           help="Device profile: a shipped name (avf profiles) or a YAML file. Required (or `profile:` "
                           "in --config)."),
    out: Path = _option("out", "--out", "-o", default=None, help="Working folder; rerun the same command to resume a "
                        "search. Required (or `out:` in --config)."),
    force: bool = _option("force", "--force", help="Start over in an OUT of ours (another search's folder)."),
    min_retention: float = _option("min_retention", "--min-retention",
                                   help="Keep at least this fraction of the FP32 GAP."),
    retention_confidence: float = _option("retention_confidence", "--retention-confidence",
                                          help="Hold each candidate's one-sided lower bound of GAP retention at this "
                                          "confidence (paired bootstrap over the selection videos) to "
                                          "--min-retention; 0: the measured retention."),
    max_latency_ms: float = _option("max_latency_ms", "--max-latency-ms",
                                    help="p99 latency budget (default: the profile's)."),
    max_memory_mib: float = _option("max_memory_mib", "--max-memory-mib",
                                    help="Memory budget (default: the profile's)."),
    batch: int = _option("batch", "--batch", help="Batch size the costs are taken at."),
    objective: str = _option("objective", "--objective", help="latency, size or energy."),
    calib: str = _option("calib", "--calib", help="INT8 calibration data (default: the checkpoint's training data)."),
    train: str = _option("train", "--train", help="Distillation data after pruning (default: the checkpoint's)."),
    eval_data: str = _option("eval", "--eval", help="Selection data the search scores on (default: the "
                             "checkpoint's validation data)."),
    test: str = _option("test", "--test", help="Held-out data, used only to report the chosen artifact's retention."),
    time_budget: float = _option("time_budget", "--time-budget", help="Minutes for this run; rerun to continue."),
    finetune_epochs: int = _option("finetune_epochs", "--finetune-epochs", help="Distillation epochs per prune ratio."),
    calib_size: int = _option("calib_size", "--calib-size", help="Calibration videos."),
    eval_size: int = _option("eval_size", "--eval-size", help="Score on the first N selection videos only."),
    ratio_step: float = _option("ratio_step", "--ratio-step",
                                help="Prune-ratio grid step (0 to 0.9) bisection chooses on."),
    max_keep_float: int = _option("max_keep_float", "--max-keep-float",
                                  help="INT8 mixed precision: at most k layers kept float."),
    bench_duration: float = _option("bench_duration", "--duration",
                                    help="Timed seconds per avf-bench measurement (avf-bench's --duration)."),
    bench_duration_alias: float = typer.Option(None, "--bench-duration", min=0.0, hidden=True,
                                               help="Old spelling of --duration."),
    threads: int = _option("threads", "--threads", default=None,
                           help="CPU threads (default: the cores this process may use)."),
    seed: int = _option("seed", "--seed"),
    target: str = _option("target", "--target", help="Where costs are measured: local, or ssh://[user@]host[:port] "
                          "or a host of your ~/.ssh/config (a device with avf's runtime install)."),
    remote_python: str = _option("remote_python", "--remote-python",
                                 help="The device's Python interpreter that has avf installed (with --target ssh://...)."),
    config: Path = config_option("search settings (TuneOptions fields: profile, min_retention, ratio_step, ...)"),
    as_json: bool = json_option("tune"),  # tune.json: the choice, the Pareto fronts, the strategy
) -> None:
    """Search prune ratio x precision x calibration x mixed precision for PROFILE; exit 3 if nothing meets every constraint."""
    from avf.cli.options import resolve_settings, target_of
    from avf.threads import default_threads
    from avf.tune.run import tune

    # flag typed > --config > the cores this process may use (threads) > TuneOptions' default
    from avf.cli.options import old_spelling

    old_spelling(ctx, "bench_duration_alias", "--bench-duration", "--duration", "avf-bench's word for it")
    options = resolve_settings(ctx, TuneOptions, {"eval_data": "eval", "bench_duration_alias": "bench_duration"},
                               config=config,
                               computed={"threads": default_threads()}, what="tune settings file").settings
    # refuses a malformed target, notes a --remote-python that does nothing
    target_of(ctx, options.target, options.remote_python)
    say = lambda line: stderr.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    with _search_progress() as (on_plan, on_record):
        state = tune(options, say=say, on_record=on_record, on_plan=on_plan)
    _print(state, options, stderr if as_json else None)
    if as_json:
        emit(json.loads(json.dumps(state, default=str)))
    if state["chosen"] is None:
        raise typer.Exit(ExitCode.BELOW_BAR)  # outputs written, nothing chosen


@contextmanager
def _search_progress():
    """Candidates done, best so far and time left (stderr, only on a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("tune"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
               TextColumn("{task.fields[left]}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("tune", total=None, best="-", left="")
        state = {"best": None, "deadline": None}

        def on_plan(total: int, seconds: float) -> None:
            import time

            state["deadline"] = time.monotonic() + seconds
            progress.update(task, total=total)

        def on_record(record: dict) -> None:
            import time

            if record["meets"] and (state["best"] is None or
                                    record["cost"]["latency_p50_ms"] < state["best"]["cost"]["latency_p50_ms"]):
                state["best"] = record
            best = state["best"]
            text = "-" if best is None else (f"{best['id']} {best['retention']:.4f} "
                                             f"{best['cost']['latency_p50_ms']:.4g} ms {best['cost']['status']}")
            left = "" if state["deadline"] is None else f"{max(0, state['deadline'] - time.monotonic()) / 60:.1f} min left"
            done = progress.tasks[task].completed + 1
            total = progress.tasks[task].total
            progress.update(task, advance=1, best=text, left=left, total=max(total or 0, done))

        yield on_plan, on_record


def _print(state: dict, options, human: Console | None = None) -> None:
    """The search's answer for a person: costs, the Pareto fronts, the choice (on stdout, or ``human``: --json's
    stderr); notes and the no-candidate lines on stderr."""
    from avf.compress.retention import REPORTED_CONFIDENCE
    from avf.tune.records import read_candidates

    status = "measured" if state["costs"].startswith("measured") else "PREDICTED"
    # the tables are wide; wrapping them helps nobody
    stdout = human or Console(width=max(_stdout.width, 150))
    records = {r["id"]: r for r in read_candidates(options.out)}
    stdout.print(Text(f"costs: {state['costs']}", style="bold" if status == "measured" else "bold yellow"),
                 soft_wrap=True)
    for cost, label in (("latency", "retention vs latency"), ("size", "retention vs size")):
        table = Table(title=f"Pareto front: {label} ({len(records)} candidates)")
        for column in ("candidate", "GAP retention", "lower bound", f"p50 ms ({status})", f"p99 ms ({status})", "MB",
                       "meets"):
            table.add_column(column, justify="left" if column in ("candidate", "meets") else "right")
        for rid in state["pareto"][cost]:
            r = records[rid]
            c = r["cost"]
            lower = r.get("retention_lower")
            table.add_row(escape(rid), f"{r['retention']:.4f}", "n/a" if lower is None else f"{lower:.4f}",
                          f"{c['latency_p50_ms']:.4g}", f"{c['latency_p99_ms']:.4g}",
                          f"{c['size_bytes'] / 1e6:.2f}", "yes" if r["meets"] else escape("; ".join(r["rejected_because"])))
        stdout.print(table)
    for row in state["strategy"].get("int4_blocks", []):  # what each MatMulNBits block size loses
        kept = ", ".join(f"{block}: {'n/a' if r is None else f'{r:.4f}'}" for block, r in row["retention"].items())
        stdout.print(Text(f"int4 at ratio {row['ratio']:g}, accuracy level {row['accuracy_level']}: GAP retention by "
                          f"block size {kept}"), soft_wrap=True)
    for note in state.get("notes", []):
        stderr.print(Text("note: " + note, style="yellow"), soft_wrap=True)
    chosen = state["chosen"]
    if chosen is None:
        closest = state["closest"]
        stderr.print(Text("no candidate meets every constraint", style="bold red"), soft_wrap=True)
        if closest:
            stderr.print(Text(f"closest: {closest['id']}: misses " + "; ".join(closest["misses"])), soft_wrap=True)
        return
    c = chosen["cost"]
    lower = chosen.get("retention_lower")
    confidence = options.retention_confidence or REPORTED_CONFIDENCE  # the bound compare_on_data measured
    bound = "" if lower is None else f", its {confidence:.0%} lower bound {lower:.4f}"
    line = (f"chosen: {chosen['id']} -> {Path(options.out) / 'artifact'}: GAP retention {chosen['retention']:.4f} "
            f"(selection data{bound}), p50 {c['latency_p50_ms']:.4g} ms / p99 {c['latency_p99_ms']:.4g} ms ({c['status']}), "
            f"{c['size_bytes'] / 1e6:.2f} MB, memory {c['memory_mib']:.1f} MiB ({c['status']})")
    stdout.print(Text(line), soft_wrap=True)
    if chosen.get("test"):
        t = chosen["test"]
        bound = t.get("retention_bound") or {}
        said = "" if bound.get("lower") is None else f" (its {bound['confidence']:.0%} lower bound {bound['lower']:.4f})"
        stdout.print(Text(f"held-out (--test, {t['videos']} videos): GAP retention {t['retention']:.4f}{said}"),
                     soft_wrap=True)
    else:
        stdout.print(Text("retention measured on the selection data (no --test given)"), soft_wrap=True)
    stdout.print(Text(f"manifest: {Path(options.out) / 'manifest.json'} (deployable: {state['manifest']['deployable']})"),
                 soft_wrap=True)

