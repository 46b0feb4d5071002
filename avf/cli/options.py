"""What every command needs of its options: defaults from the settings model, "was it given", one mapping
of a settings error back to the option that caused it.

A command's settings are a pydantic model (TrainSettings, CompressOptions, TuneOptions): its fields hold
the defaults and the limits, so the typer option takes them from there (:func:`option`) instead of
repeating them, and the "does nothing" notes ask :func:`given` instead of comparing against a copy.
"""

from __future__ import annotations

from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from avf.errors import InputError

Settings = TypeVar("Settings", bound=BaseModel)


def option(model: type[BaseModel], field: str, *flags: str, help: str | None = None, **kwargs: Any):
    """A typer option whose default (and help, when none is given) is the settings model's own field."""
    info = model.model_fields[field]
    default = kwargs.pop("default", info.get_default(call_default_factory=True))
    return typer.Option(default, *flags, help=help or info.description, **kwargs)


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
