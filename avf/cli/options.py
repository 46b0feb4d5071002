"""What every command needs of its options: defaults from the settings model, "was it given", one mapping
of a settings error back to the option that caused it.

A command's settings are a pydantic model (TrainSettings, CompressOptions, TuneOptions): its fields hold
the defaults and the limits, so the typer option takes them from there (:func:`option`) instead of
repeating them, and the "does nothing" notes ask :func:`given` instead of comparing against a copy. A
command without a settings model takes its defaults from the library function it calls, the same way.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from avf.errors import InputError

Settings = TypeVar("Settings", bound=BaseModel)


def option(source: type[BaseModel] | Callable[..., Any], name: str, *flags: str, help: str | None = None,
           **kwargs: Any):
    """A typer option whose default is stated once, where the work is defined: the settings model's field
    ``name`` (whose description is the help when none is given), or the parameter ``name`` of the library
    function the command passes it on to (``option(benchmark, "duration", "--duration")``)."""
    description = None
    if isinstance(source, type) and issubclass(source, BaseModel):
        info = source.model_fields[name]
        default = ... if info.is_required() else info.get_default(call_default_factory=True)
        description = info.description
    else:
        default = inspect.signature(source).parameters[name].default
        if default is inspect.Parameter.empty:
            default = ...
    default = kwargs.pop("default", default)
    return typer.Option(default, *flags, help=help or description, **kwargs)


def choices(model: type[BaseModel], field: str) -> type[Enum]:
    """The values of a ``Literal`` field as the str Enum typer shows and checks as the option's choices."""
    values = typing.get_args(model.model_fields[field].annotation)
    return Enum("".join(part.title() for part in field.split("_")), {value: value for value in values}, type=str)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option ``name`` (its parameter name), as opposed to its default applying."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def validated(schema: type[Settings], flags: dict[str, str] | None = None, /, **values: Any) -> Settings:
    """``schema(**values)``; a field the schema refuses becomes one InputError naming the option that set it
    (``flags`` maps a field to its option where the names differ, e.g. num_classes -> --classes)."""
    try:
        return schema(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = (flags or {}).get(field) or "--" + field.replace("_", "-")
        raise InputError(None, f"{flag}: {first['msg']}") from None


def from_options(ctx: typer.Context, schema: type[Settings], renamed: dict[str, str] | None = None, /,
                 **values: Any) -> Settings:
    """``schema`` built from the command's own options, through :func:`validated`: every option whose parameter
    is a field of ``schema`` (``renamed`` maps a parameter to its field where the names differ, e.g. classes ->
    num_classes), enums as their values, an option left at None taking the field's default; then ``values``
    (conversions, computed defaults) on top. A refused field names the option as the user spells it."""
    renamed = renamed or {}
    fields, flags = {}, {}
    for param in ctx.command.params:
        field = renamed.get(param.name, param.name)
        if field not in schema.model_fields:
            continue
        long = [flag for flag in param.opts if flag.startswith("--")]
        flags[field] = long[0] if long else param.name.upper()  # an argument goes by its metavar, CHECKPOINT
        value = ctx.params.get(param.name)
        if value is not None:
            fields[field] = value.value if isinstance(value, Enum) else value
    return validated(schema, flags, **{**fields, **values})


def target_of(ctx: typer.Context, target: str, remote_python: str):
    """The ``--target`` device (an SshTarget), or None for this machine; ``--remote-python`` given for this
    machine does nothing, and a ``note:`` says so."""
    from avf.cli.progress import note
    from avf.remote.ssh import parse_target

    remote = parse_target(target, remote_python)
    if remote is None and given(ctx, "remote_python"):
        note("--remote-python does nothing without --target ssh://... (it names the device's interpreter)")
    return remote
