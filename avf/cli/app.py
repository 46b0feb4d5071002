"""The ``avf`` command: one typer app whose sub-commands follow the pipeline."""

from __future__ import annotations

import math
import sys
from typing import NoReturn

import typer
from rich.text import Text
from typer.core import TyperGroup

from avf.threads import set_passive_waiting

set_passive_waiting()  # before any command imports torch: idle OpenMP threads sleep instead of spinning

from avf import __version__  # noqa: E402
from avf.cli.compress_commands import compress_command  # noqa: E402
from avf.cli.data_commands import data_app  # noqa: E402
from avf.cli.deploy_commands import bench_command, demo_command, deploy_app, predict_command, profiles_command  # noqa: E402
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
) -> None:
    """Audio-visual fusion video classifiers, from YouTube-8M features to a verified deployment."""


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


def run(args: list[str] | None = None) -> None:
    """Run the app; bad input becomes one ``error:`` line and exit code 2, never a traceback.

    Usage errors (unknown option, out-of-range value), InputError, invalid files (pydantic),
    operating-system errors (permission, no space) and running out of memory all take this one
    path; a signal unwinds the command (removing temporary outputs) and exits 128 + signal.
    """
    from pydantic import ValidationError

    try:  # typer >= 0.22 carries its own click
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError

    previous = _install_signal_handlers()
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
    except typer.Abort:
        fail("aborted", 1)
    except ValidationError as exc:
        from avf.documents import first_problem

        fail(f"{exc.title}: {first_problem(exc)}")
    except Interrupted as exc:
        import signal

        name = signal.Signals(exc.signum).name
        stderr.print(Text(f"interrupted ({name}): nothing partial was left behind", style="bold red"), soft_wrap=True)
        raise SystemExit(128 + exc.signum) from None
    except MemoryError:
        fail("out of memory: use a smaller --batch/--batch-size, fewer videos, or a machine with more memory")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    finally:
        import signal

        for number, handler in previous.items():
            signal.signal(number, handler)
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    run(sys.argv[1:])


def train_main() -> None:
    """``avf-train``: the same as ``avf train``."""
    run(["train", *sys.argv[1:]])


def compress_main() -> None:
    """``avf-compress``: the same as ``avf compress``."""
    run(["compress", *sys.argv[1:]])


def bench_main() -> None:
    """``avf-bench``: the same as ``avf bench``."""
    run(["bench", *sys.argv[1:]])


def deploy_main() -> None:
    """``avf-deploy``: the same as ``avf deploy``."""
    run(["deploy", *sys.argv[1:]])
