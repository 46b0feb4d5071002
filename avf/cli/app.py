"""The ``avf`` command: one typer app whose sub-commands follow the pipeline."""

from __future__ import annotations

import sys

import typer

from avf import __version__
from avf.cli.compress_commands import compress_command
from avf.cli.data_commands import data_app
from avf.cli.deploy_commands import bench_command, demo_command, deploy_app, predict_command, profiles_command
from avf.cli.progress import stderr
from avf.cli.model_commands import models_command
from avf.cli.train_commands import eval_command, train_command
from avf.errors import InputError

app = typer.Typer(
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Audio-visual fusion video classifiers, from YouTube-8M features to a verified deployment."""


def run(args: list[str] | None = None) -> None:
    """Run the app; bad input becomes one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=args, prog_name="avf")
    except InputError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        stderr.print("[bold red]interrupted[/]: nothing partial was left behind", soft_wrap=True)
        raise SystemExit(130) from None


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
