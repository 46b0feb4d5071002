"""The ``avf`` command: one typer app whose sub-commands follow the pipeline."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.text import Text
from typer.core import TyperGroup

from avf.threads import set_passive_waiting

set_passive_waiting()  # before any command imports torch: idle OpenMP threads sleep instead of spinning

from avf import __version__  # noqa: E402
from avf.cli.compress_commands import compress_command  # noqa: E402
from avf.cli.data_commands import data_app  # noqa: E402
from avf.cli.deploy_commands import bench_command, demo_command, deploy_app, predict_command, profiles_command  # noqa: E402
from avf.cli import progress  # noqa: E402
from avf.cli.progress import stderr  # noqa: E402
from avf.cli.model_commands import models_command  # noqa: E402
from avf.cli.train_commands import eval_command, train_command  # noqa: E402
from avf.cli.tune_commands import tune_command  # noqa: E402
from avf.errors import ExitCode, InputError  # noqa: E402


class _RootGroup(TyperGroup):
    """The ``avf`` command: before anything is parsed, every number option of every command refuses nan and inf."""

    def main(self, *args, **kwargs):
        _refuse_non_finite_numbers(self)
        return super().main(*args, **kwargs)


def _refuse_non_finite_numbers(command) -> None:
    """Wrap the conversion of every parameter of the command tree, in this one place for all commands (so a
    new option is covered as it is added): a float that is nan, inf or -inf becomes a usage error naming
    the option, never a value that trains into a "divergence" or an OverflowError traceback."""
    for param in command.params:
        if not getattr(param.process_value, "refuses_non_finite", False):
            param.process_value = _finite_only(param, param.process_value)
    for sub in (getattr(command, "commands", None) or {}).values():
        _refuse_non_finite_numbers(sub)


def _finite_only(param, process_value):
    try:  # typer >= 0.22 carries its own click
        from typer._click.exceptions import BadParameter
    except ImportError:
        from click.exceptions import BadParameter

    def process(ctx, value):
        result = process_value(ctx, value)
        values = result if isinstance(result, (list, tuple)) else (result,)
        if any(isinstance(number, float) and not math.isfinite(number) for number in values):
            raise BadParameter("must be a finite number, not nan or inf", ctx=ctx, param=param)
        return result

    process.refuses_non_finite = True
    return process


app = typer.Typer(
    cls=_RootGroup,
    name="avf",
    help="Audio-visual fusion video classifiers: YouTube-8M data -> train -> compress -> deploy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.command("models")(models_command)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("compress")(compress_command)
app.command("profiles")(profiles_command)
app.command("bench")(bench_command)
app.command("predict")(predict_command)
app.add_typer(deploy_app, name="deploy")
app.command("demo")(demo_command)
app.command("tune")(tune_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More on stderr: -v info lines, -vv debug lines too."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Only warnings and errors on stderr: no notes, status lines or progress bars."),
    log_file: Optional[Path] = typer.Option(  # noqa: UP045 (typer reads the annotation at run time)
        None, "--log-file", metavar="FILE", help="Append a log with timestamps to FILE: everything avf logs (DEBUG) "
        "and says on stderr, other libraries' warnings, and the traceback of an internal error."),
) -> None:
    """Audio-visual fusion video classifiers, from YouTube-8M features to a verified deployment.

    Data (tables, JSON, results) goes to stdout; notes, progress and training's per-epoch lines to stderr.
    """
    progress.configure(verbose, quiet, log_file)
    progress.log.debug("avf %s (Python %s, pid %d): avf %s", __version__, sys.version.split()[0], os.getpid(),
                       " ".join(sys.argv[1:]) if _Run.args is None else " ".join(_Run.args))


class _Run:
    """The arguments of the run in progress (for the log's first line)."""

    args: list[str] | None = None


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: unwinds like Ctrl-C, so every atomic writer removes its temporary output.

    Not a KeyboardInterrupt, which typer would turn into a bare exit code before cleanup is reported.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _install_signal_handlers() -> dict:
    """Route the stop signals to Interrupted; returns the previous handlers (to restore in-process callers)."""
    import signal
    import threading

    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, _raise_interrupted)
    return previous


def fail(message: str, code: int = ExitCode.BAD_INPUT) -> NoReturn:
    """The one error path: ``error: <message>`` on one stderr line (no markup, brackets kept), exit ``code``."""
    text = Text("error:", style="bold red")
    text.append(" " + " ".join(str(message).split()))
    stderr.print(text, soft_wrap=True, highlight=False)
    raise SystemExit(code)


def _interrupted(signum: int) -> NoReturn:
    import signal

    name = signal.Signals(signum).name
    stderr.print(Text(f"interrupted ({name}): nothing partial was left behind", style="bold red"), soft_wrap=True)
    raise SystemExit(128 + signum) from None


def traceback_folder() -> Path:
    """Where an internal error's traceback goes without ``--log-file``: ``$AVF_CACHE/tracebacks`` (or
    ``$XDG_CACHE_HOME/avf/tracebacks``, ``~/.cache/avf/tracebacks``)."""
    base = os.environ.get("AVF_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                       "avf")
    return Path(base) / "tracebacks"


def _write_traceback(exc: BaseException) -> str:
    """Write the traceback to the log file (when given) or a new file of its own; returns where it went."""
    import traceback

    command = " ".join(_Run.args or sys.argv[1:])
    header = f"avf {__version__}, Python {sys.version.split()[0]}, internal error in: avf {command}"
    log_file = progress.log_file()
    if log_file is not None:
        progress.write_to_log(header, exc)
        return str(log_file)
    import tempfile

    folder = traceback_folder()
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=time.strftime("avf-%Y%m%d-%H%M%S-"), suffix=".txt", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as fh:
        fh.write(header + "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return name


def internal_error(exc: BaseException) -> NoReturn:
    """An exception nothing else covers: a bug, not bad input. One ``internal error:`` line on stderr naming
    the exception and where its full traceback was written; never a traceback on the terminal (unless even
    that write failed: then the line says so and the traceback follows it). Exits 70."""
    import traceback

    lines = str(exc).strip().splitlines()
    first = " ".join(lines[0].split())[:500] if lines else ""
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    try:
        where, failed = _write_traceback(exc), None
    except Exception as problem:  # noqa: BLE001 (a full disk, a read-only cache: said on the line)
        where, failed = None, problem
    line = Text("internal error:", style="bold red")
    if failed is None:
        line.append(f" {what} (full traceback: {where})")
    else:
        reason = getattr(failed, "strerror", None) or failed
        line.append(f" {what} (the traceback could not be written to a file: {reason}; it follows)")
    stderr.print(line, soft_wrap=True, highlight=False, markup=False)
    if failed is not None:
        sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        sys.stderr.flush()
    raise SystemExit(ExitCode.INTERNAL)


def run(args: list[str] | None = None) -> None:
    """Run the app; bad input becomes one ``error:`` line and exit code 2, never a traceback.

    Usage errors (unknown option, out-of-range value), InputError, invalid files (pydantic),
    operating-system errors (permission, no space) and running out of memory all take this one
    path; a signal unwinds the command (removing temporary outputs) and exits 128 + signal (an abort,
    typer.Abort, which click raises for a Ctrl-C it caught, exits 130 as Ctrl-C does: never 1, which
    means a verify mismatch); any other exception is a bug: one ``internal error:`` line, the traceback
    in a file, exit 70 (:func:`internal_error`).
    """
    _Run.args = None if args is None else list(args)
    started = time.monotonic()
    previous = _install_signal_handlers()
    code: object = ExitCode.INTERNAL
    try:
        code = _run(args)
    except SystemExit as exc:
        code = exc.code
        raise
    finally:
        import signal

        for number, handler in previous.items():
            signal.signal(number, handler)
        progress.log.info("exit %s after %.1f s", 0 if code is None else code, time.monotonic() - started)
        progress.reset()
        _Run.args = None
    raise SystemExit(code)


def _run(args: list[str] | None) -> int:
    from pydantic import ValidationError

    try:  # typer >= 0.22 carries its own click
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError

    try:
        code = app(args=args, prog_name="avf", standalone_mode=False)
    except InputError as exc:
        fail(str(exc))
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # a bare `avf data`: its help
            typer.echo(exc.ctx.get_help())
            raise SystemExit(0) from None
        command = exc.ctx.command_path if exc.ctx is not None else "avf"
        fail(f"{command}: {exc.format_message()}")
    except typer.Abort as exc:
        import signal

        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # Ctrl-C, caught by click
            _interrupted(signal.SIGINT)
        fail("aborted", 128 + signal.SIGINT)
    except ValidationError as exc:
        from avf.documents import first_problem

        fail(f"{exc.title}: {first_problem(exc)}")
    except Interrupted as exc:
        _interrupted(exc.signum)
    except MemoryError:
        fail("out of memory: use a smaller --batch/--batch-size, fewer videos, or a machine with more memory")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 (anything else is a bug: said on one line, traceback in a file)
        internal_error(exc)
    return code if isinstance(code, int) else 0


def _root_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split the root options (``-v``, ``-q``, ``--log-file F``) off the front of a shortcut's arguments, so
    ``avf-train -v --log-file t.log ...`` works as ``avf -v --log-file t.log train ...`` does."""
    root: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest[0]
        if arg in ("-q", "--quiet", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            root.append(rest.pop(0))
        elif arg == "--log-file" and len(rest) > 1:
            root += [rest.pop(0), rest.pop(0)]
        elif arg.startswith("--log-file="):
            root.append(rest.pop(0))
        else:
            break
    return root, rest


def _shortcut(command: str) -> None:
    root, rest = _root_options(sys.argv[1:])
    run([*root, command, *rest])


def main() -> None:
    run(sys.argv[1:])


def train_main() -> None:
    """``avf-train``: the same as ``avf train``."""
    _shortcut("train")


def compress_main() -> None:
    """``avf-compress``: the same as ``avf compress``."""
    _shortcut("compress")


def bench_main() -> None:
    """``avf-bench``: the same as ``avf bench``."""
    _shortcut("bench")


def deploy_main() -> None:
    """``avf-deploy``: the same as ``avf deploy``."""
    _shortcut("deploy")
