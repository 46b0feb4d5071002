"""nan and inf are refused by every number option of every command, and by the settings models.

The options are found by walking the command tree typer builds, so an option added later is
covered without touching this file.
"""

from __future__ import annotations

import math
import os
import typing

import pytest

from cli_harness import cli, snapshot


def _takes_floats(param) -> bool:
    descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.22 describes types itself
    if descriptor is not None:
        annotation = descriptor.annotation
        return annotation is float or float in typing.get_args(annotation)
    return "float" in type(param.type).__name__.lower()  # click's FLOAT and FloatRange


def _float_options() -> list[tuple[list[str], str]]:
    """(command path, option) for every float option of every command."""
    import typer.main

    from avf.cli.app import app

    found = []

    def walk(command, path):
        for param in command.params:
            if _takes_floats(param) and param.opts and param.opts[0].startswith("--"):
                found.append((path, param.opts[0]))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


FLOAT_OPTIONS = _float_options()


def test_the_walk_finds_the_float_options():
    assert (["train"], "--lr") in FLOAT_OPTIONS and (["train"], "--warmup-epochs") in FLOAT_OPTIONS
    assert (["bench"], "--duration") in FLOAT_OPTIONS and len(FLOAT_OPTIONS) >= 10


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
@pytest.mark.parametrize("path, option", FLOAT_OPTIONS, ids=[" ".join([*p, o]) for p, o in FLOAT_OPTIONS])
def test_non_finite_number_is_one_error_line_naming_the_option(tmp_path, path, option, value):
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, out, err = cli(*path, f"{option}={value}")
    finally:
        os.chdir(previous)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert option in errors[0], errors[0]
    assert snapshot(tmp_path) == {}, "something was written"


def test_settings_models_refuse_non_finite_numbers_for_library_callers(tmp_path):
    from pydantic import ValidationError

    from avf.compress.pipeline import CompressOptions
    from avf.train.loop import TrainSettings
    from avf.tune.search import TuneOptions

    for bad in (math.inf, math.nan):
        with pytest.raises(ValidationError, match="finite"):
            TrainSettings(model="moe", train="data", out="run", lr=bad)
        with pytest.raises(ValidationError, match="finite"):
            TrainSettings(model="moe", train="data", out="run", warmup_epochs=bad)
        with pytest.raises(ValidationError, match="finite"):
            CompressOptions(checkpoint=tmp_path / "best.pt", min_retention=0.5, finetune_lr=bad)
        with pytest.raises(ValidationError, match="finite"):
            TuneOptions(checkpoint=tmp_path / "best.pt", profile="x86-cpu", out=tmp_path / "t", time_budget=bad)
