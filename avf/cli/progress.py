"""Rich progress bars for long work, with a records/s readout (on stderr, so stdout stays data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr = Console(stderr=True)


def note(message: str) -> None:
    """One ``note:`` line on stderr: something worth knowing that is not an error (an option that does nothing)."""
    stderr.print(Text(f"note: {message}", style="yellow"), soft_wrap=True)


class _RecordsRate(ProgressColumn):
    def render(self, task) -> Text:
        records = task.fields.get("records", 0)
        elapsed = task.elapsed or 0.0
        rate = f"{records / elapsed:,.0f} rec/s" if elapsed > 0 else "-- rec/s"
        return Text(f"{records:,} records  {rate}", style="progress.data.speed")


@contextmanager
def bytes_progress(description: str, total_bytes: int) -> Iterator:
    """Progress over input bytes; yields ``advance(bytes, records)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
               _RecordsRate(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total_bytes, records=0)

        def advance(n_bytes: int, n_records: int) -> None:
            fields = progress.tasks[task].fields
            progress.update(task, advance=n_bytes, records=fields["records"] + n_records)

        yield advance


@contextmanager
def count_progress(description: str, total: int | None) -> Iterator:
    """Progress over a known number of items; yields ``advance(n)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


@contextmanager
def training_progress(description: str, total_steps: int) -> Iterator:
    """Progress over optimizer steps; yields ``advance(mean_loss, samples_per_s)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:,.0f} samples/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total_steps, loss=float("nan"), rate=0.0)
        yield lambda loss, rate: progress.update(task, advance=1, loss=loss, rate=rate)
