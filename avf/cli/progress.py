"""What a command says on stderr, in one place: status lines, notes, progress bars and log records.

stdout is for data (tables, JSON, results); everything else goes through :data:`stderr`, which

* prints each line unless ``-q/--quiet`` hides it (quiet keeps warnings and errors only, and hides the
  progress bars: :attr:`_Terminal.is_terminal` is False then, so every bar is disabled);
* copies each line into the ``--log-file`` (when one is given) through the ``avf.console`` logger, with
  its level and a timestamp;
* prints the records of the ``avf`` logger hierarchy at ``-v`` (INFO) and ``-vv`` (DEBUG) as
  ``info: ...`` / ``debug: ...`` lines.

:func:`configure` (called by the root command) sets this up for one run; :func:`reset` undoes it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

#: The logger hierarchy of avf: library modules log to ``logging.getLogger(__name__)`` (``avf.x.y``).
log = logging.getLogger("avf")
#: What was printed on stderr, copied into the log file (never printed again by the terminal handler).
_console_log = logging.getLogger("avf.console")

#: A line starting with one of these is a warning or an error: printed even under ``-q``. (The commands
#: print them with ``stderr.print``; a new kind of line can instead pass ``level=logging.WARNING``.)
_ERROR_PREFIXES = ("error:", "internal error:", "interrupted")
_WARNING_PREFIXES = ("warning:", "mismatch:", "rejected:", "no candidate", "closest:")

#: The log file's line format; a file whose first line does not match it is not a log avf wrote.
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ ")


class _Output:
    """This run's settings (module state: the in-process test harness runs many commands in one process)."""

    verbosity = 0  # -1 quiet, 0 default, 1 -v (INFO), 2 -vv (DEBUG)
    log_file: Path | None = None
    handlers: list[tuple[logging.Logger, logging.Handler]] = []
    saved: dict = {}


def quiet() -> bool:
    return _Output.verbosity < 0


def _plain(obj, markup: bool | None) -> str | None:
    """The text of a str or Text, or None for any other renderable (a table, a progress bar's control codes)."""
    if isinstance(obj, Text):
        return obj.plain
    if isinstance(obj, str):
        if markup is False:
            return obj
        try:
            return Text.from_markup(obj).plain
        except Exception:  # not valid markup: rich prints it as it is
            return obj
    return None


def _level_of(text: str) -> int:
    start = text.lstrip().lower()
    if start.startswith(_ERROR_PREFIXES):
        return logging.ERROR
    if start.startswith(_WARNING_PREFIXES):
        return logging.WARNING
    return logging.INFO


class _Terminal(Console):
    """The stderr console: ``print`` honours ``-q`` and copies the line into the log; bars hide under ``-q``."""

    @property
    def is_terminal(self) -> bool:
        return not quiet() and super().is_terminal

    def print(self, *objects, level: int | None = None, **kwargs) -> None:
        texts = [_plain(obj, kwargs.get("markup")) for obj in objects]
        if not objects or any(text is None for text in texts):  # a renderable of rich's own (Live's control codes)
            super().print(*objects, **kwargs)
            return
        text = kwargs.get("sep", " ").join(texts)
        if level is None:
            level = _level_of(text)
        if text.strip() and _Output.handlers:  # configured: never to Python's last-resort handler (a 2nd copy)
            _console_log.log(level, "%s", text, extra={"avf_console": True})
        if level >= logging.WARNING or not quiet():
            super().print(*objects, **kwargs)


stderr = _Terminal(stderr=True)


def note(message: str) -> None:
    """One ``note:`` line on stderr: something worth knowing that is not an error (an option that does nothing)."""
    stderr.print(Text(f"note: {message}", style="yellow"), soft_wrap=True)


class _TerminalHandler(logging.Handler):
    """Records of the ``avf`` loggers (not the lines :data:`stderr` printed itself) as ``info: ...`` lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "avf_console", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()}: {record.getMessage()}"
            if record.exc_info and _Output.verbosity >= 2:
                line += "\n" + logging.Formatter().formatException(record.exc_info)
            Console.print(stderr, Text(line, style="dim" if record.levelno < logging.WARNING else "yellow"),
                          soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


class _LogFileHandler(logging.FileHandler):
    """The ``--log-file``: a failed write (full disk) is said once, on one line, then writing stops; never a
    "--- Logging error ---" traceback."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            import sys

            problem = sys.exc_info()[1]
            Console.print(stderr, Text(f"warning: {self.baseFilename}: cannot write the log ({problem}); "
                                       "logging to it stops here", style="yellow"), soft_wrap=True, highlight=False)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)


def check_log_file(path: Path) -> None:
    """Refuse a ``--log-file`` before anything is written: a folder, a FIFO or device, a missing folder, or an
    existing file that is not a log avf wrote (appending to a checkpoint or a store would damage it)."""
    from avf.errors import InputError

    if path.is_dir():
        raise InputError(path, "--log-file is a directory; name a file")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise InputError(path, f"--log-file: its folder {path.parent} {what}")
    if path.exists():
        if not path.is_file():
            raise InputError(path, "--log-file is not a regular file (a FIFO or device); name a file")
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)
        except OSError as exc:
            raise InputError(path, f"--log-file cannot be read: {exc.strerror or exc}") from None
        if head and not _LOG_LINE.match(head.decode("utf-8", "replace")):
            raise InputError(path, "--log-file exists and is not a log avf wrote (avf appends only to its own "
                             "logs); name a new file")


def configure(verbose: int = 0, quiet_: bool = False, log_file: Path | None = None) -> None:
    """Set up this run's output: ``-v`` (repeatable), ``-q``, ``--log-file`` (see the module docstring).

    The log file gets every record of the ``avf`` loggers at DEBUG and every stderr line, with timestamps,
    plus the other libraries' loggers (and Python warnings) at WARNING; on the terminal those keep Python's
    default (warnings and errors on stderr). Undone by :func:`reset`.
    """
    from avf.errors import InputError

    reset()
    if verbose and quiet_:
        raise InputError(None, "-q/--quiet and -v/--verbose contradict each other: choose one")
    _Output.verbosity = -1 if quiet_ else min(verbose, 2)
    terminal_level = {-1: logging.WARNING, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[_Output.verbosity]
    root = logging.getLogger()
    _Output.saved = {"level": log.level, "propagate": log.propagate, "root_level": root.level}
    log.propagate = False
    _add(log, _TerminalHandler(terminal_level))
    level = terminal_level
    if log_file is not None:
        check_log_file(log_file)
        try:
            handler = _LogFileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise InputError(log_file, f"--log-file cannot be written: {exc.strerror or exc}") from None
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        handler.addFilter(_avf_or_warning)
        had_root_handlers = bool(root.handlers)
        _add(log, handler)
        _add(root, handler)  # the other libraries' records: WARNING and above (the filter)
        if not had_root_handlers:  # Python's default for the terminal (warnings and errors) stays as it was
            _add(root, logging.lastResort)
        if root.level > logging.WARNING or root.level == logging.NOTSET:
            root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        _Output.log_file = log_file
        level = logging.DEBUG
    log.setLevel(level)


def _avf_or_warning(record: logging.LogRecord) -> bool:
    return record.name == "avf" or record.name.startswith("avf.") or record.levelno >= logging.WARNING


def _add(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.addHandler(handler)
    _Output.handlers.append((logger, handler))


def reset() -> None:
    """Back to the defaults (every stderr line shown, no log file), closing the log file."""
    for logger, handler in reversed(_Output.handlers):
        logger.removeHandler(handler)
        if isinstance(handler, _LogFileHandler):
            try:
                handler.close()
            except OSError:
                pass
    if _Output.handlers:
        logging.captureWarnings(False)
    if _Output.saved:
        log.setLevel(_Output.saved["level"])
        log.propagate = _Output.saved["propagate"]
        logging.getLogger().setLevel(_Output.saved["root_level"])
    _Output.handlers = []
    _Output.saved = {}
    _Output.verbosity = 0
    _Output.log_file = None


def log_file() -> Path | None:
    """This run's ``--log-file``, if one was given."""
    return _Output.log_file


def write_to_log(message: str, exc: BaseException | None = None) -> None:
    """Append one record (with ``exc``'s traceback) to this run's log file at once; raises OSError when it
    cannot be written (where :class:`_LogFileHandler` would only say so)."""
    for _, handler in _Output.handlers:
        if isinstance(handler, _LogFileHandler) and handler.stream is not None and not handler.failed:
            exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
            record = log.makeRecord(log.name, logging.CRITICAL, "(avf)", 0, message, (), exc_info)
            handler.stream.write(handler.format(record) + "\n")
            handler.stream.flush()
            return
    raise OSError("the log file is not open")


@contextmanager
def _logged(description: str, unit: str = "") -> Iterator[dict]:
    """Log a progress bar's work at INFO when it ends (so ``-v`` and the log file show it where no bar is drawn)."""
    counts = {"done": 0}
    started = time.monotonic()
    log.debug("%s: started", description)
    yield counts
    log.info("%s: %s%s in %.1f s", description, f"{counts['done']:,}", unit, time.monotonic() - started)


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
    with _logged(description, " records") as counts, \
            Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total_bytes, records=0)

        def advance(n_bytes: int, n_records: int) -> None:
            fields = progress.tasks[task].fields
            progress.update(task, advance=n_bytes, records=fields["records"] + n_records)
            counts["done"] += n_records

        yield advance


@contextmanager
def count_progress(description: str, total: int | None) -> Iterator:
    """Progress over a known number of items; yields ``advance(n)``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with _logged(description) as counts, \
            Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            counts["done"] += n

        yield advance


@contextmanager
def training_progress(description: str, total_steps: int) -> Iterator:
    """Progress over optimizer steps; yields ``advance(mean_loss, samples_per_s)``. (Each epoch's result is
    its own line, printed by training: nothing more is logged here.)"""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:,.0f} samples/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total_steps, loss=float("nan"), rate=0.0)
        yield lambda loss, rate: progress.update(task, advance=1, loss=loss, rate=rate)
