"""What every command needs of its options: defaults from the settings model, "was it given", one mapping
of a settings error back to the option that caused it.

A command's settings are a pydantic model (TrainSettings, CompressOptions, TuneOptions): its fields hold
the defaults and the limits, so the typer option takes them from there (:func:`option`) instead of
repeating them, and the "does nothing" notes ask :func:`given` instead of comparing against a copy. A
command without a settings model takes its defaults from the library function it calls, the same way.

:func:`resolve_settings` builds the model from its layers: the field's default < a recipe (``avf train
--recipe``) < a ``--config`` YAML file of the same fields (:func:`read_settings_file`, through
:mod:`avf.documents`) < the options the user typed; the settings record where they came from
(``resolved_from``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
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


def target_of(ctx: typer.Context, target: str, remote_python: str):
    """The ``--target`` device (an SshTarget), or None for this machine; ``--remote-python`` given for this
    machine does nothing, and a ``note:`` says so."""
    from avf.cli.progress import note
    from avf.remote.ssh import parse_target

    remote = parse_target(target, remote_python)
    if remote is None and given(ctx, "remote_python"):
        note("--remote-python does nothing without --target ssh://... (it names the device's interpreter)")
    return remote


# ----------------------------------------------------------------------------- --config and --recipe

#: Fields no settings file may set: what must be typed (--force replaces outputs) and the record of where the
#: settings came from.
NOT_IN_FILES = frozenset({"force", "resolved_from"})


@dataclass
class Resolved:
    """A command's settings resolved from its layers, and which fields were asked for explicitly."""

    settings: Any
    #: fields typed on the command line
    typed: set[str]
    #: fields typed, or set by --config or by a --recipe the user named (not by the default recipe)
    explicit: set[str]


def config_option(what: str = "the command's settings"):
    return typer.Option(None, "--config", help=f"A YAML file of {what} (the settings' field names, e.g. `lr: 1.0e-3`); "
                        "a flag typed on the command line overrides it; the run records it and its sha256.")


def _file_model(schema: type[BaseModel], excluded: frozenset[str]) -> type[BaseModel]:
    """``schema`` with every field optional (a file sets some of them), limits and types kept, no other key."""
    import copy

    from pydantic import ConfigDict, create_model

    fields = {}
    for name, info in schema.model_fields.items():
        if name in excluded:
            continue
        loose = copy.copy(info)
        loose.default, loose.default_factory = None, None
        fields[name] = (info.annotation, loose)
    return create_model(f"{schema.__name__}File", __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields)


def read_settings_file(path: Path, what: str, schema: type[BaseModel], excluded: frozenset[str] = NOT_IN_FILES
                       ) -> tuple[dict[str, Any], str]:
    """The fields a YAML settings file sets, validated against ``schema``'s types and limits, and its sha256.

    Read through :mod:`avf.documents` (a folder, FIFO or device is refused before it is opened); a key that is
    not a field of ``schema`` is refused naming it, as is the first bad value (its field named)."""
    import difflib
    import hashlib

    from avf.documents import parse_mapping, read_text, validate

    path = Path(path)
    text = read_text(path, what)
    data = parse_mapping(path, what, text, language="yaml")
    for key in data:
        if key in excluded:
            raise InputError(path, f"{key!r} cannot be set in {what} (type it on the command line)")
        if key not in schema.model_fields:
            known = [name for name in schema.model_fields if name not in excluded]
            close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (settings: {', '.join(known)})"
            raise InputError(path, f"unknown setting {key!r} in {what}{hint}")
    # "invalid training settings file: field 'lr': ..."
    model = validate(path, what.removeprefix("a "), data, _file_model(schema, excluded))
    return model.model_dump(exclude_unset=True), hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flag_value(value: Any, annotation: Any) -> Any:
    """A typed option's value as its settings field takes it: enums as their values, a path as text where the
    field is text, a tuple of a repeated option as a list."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path) and Path not in (annotation, *typing.get_args(annotation)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def resolve_settings(ctx: typer.Context, schema: type[Settings], renamed: dict[str, str] | None = None, /, *,
                     config: Path | None = None, recipe: Path | None = None, recipe_name: str | None = None,
                     recipe_given: bool = False, typed_values: dict[str, Any] | None = None,
                     computed: dict[str, Any] | None = None, what: str = "settings file") -> Resolved:
    """``schema`` built from its layers, each on top of the one before:

    1. the field's default (the settings model's);
    2. ``computed`` defaults the command works out (e.g. ``threads``: the cores this process may use);
    3. the recipe (``recipe``: a shipped settings file, ``recipe_name`` recorded);
    4. the ``--config`` file (``config``);
    5. every option the user typed (:func:`given`), and ``typed_values`` (a value the command derived from typed
       flags, e.g. avf-compress's precision from ``--int8``).

    Options left at their default do not count: the layers below decide. The settings record where they came
    from in their ``resolved_from`` field: ``{"recipe": name, "config": {"path", "sha256"}, "command_line": [the
    fields typed]}``.
    A value a file refuses names the file and the field; one the command line refuses names the option; a
    required field nobody set says how to give it."""
    renamed = renamed or {}
    layers: dict[str, Any] = dict(computed or {})
    explicit: set[str] = set()
    source: dict[str, Any] = {"recipe": recipe_name, "config": None}
    if recipe is not None:
        values, _ = read_settings_file(recipe, f"recipe {recipe_name!r}", schema)
        layers.update(values)
        if recipe_given:
            explicit |= values.keys()
    if config is not None:
        values, sha256 = read_settings_file(config, f"a {what}", schema)
        layers.update(values)
        explicit |= values.keys()
        source["config"] = {"path": str(config), "sha256": sha256}
    flags, typed = {}, set()
    for param in ctx.command.params:
        field = renamed.get(param.name, param.name)
        if field not in schema.model_fields:
            continue
        long = [flag for flag in param.opts if flag.startswith("--")]
        flags[field] = long[0] if long else param.name.upper()  # an argument goes by its metavar, CHECKPOINT
        if given(ctx, param.name):
            layers[field] = _flag_value(ctx.params[param.name], schema.model_fields[field].annotation)
            typed.add(field)
    for field, value in (typed_values or {}).items():
        layers[field] = value
        typed.add(field)
    explicit |= typed
    if "resolved_from" in schema.model_fields:
        layers["resolved_from"] = {**source, "command_line": sorted(typed)}
    missing = [name for name, info in schema.model_fields.items() if info.is_required() and name not in layers]
    if missing:
        flag = flags.get(missing[0], "--" + missing[0].replace("_", "-"))
        raise InputError(None, f"{flag} is required (on the command line, or as `{missing[0]}:` in --config)")
    return Resolved(validated(schema, flags, **layers), typed, explicit)


def old_spelling(ctx: typer.Context, name: str, old: str, new: str, why: str) -> None:
    """A hidden option kept under its old spelling for one release: used when typed, with a note naming the new one
    (the settings resolution maps the parameter ``name`` to the new option's field)."""
    if given(ctx, name):
        from avf.cli.progress import note

        note(f"{old} is now {new} ({why}); {old} still works in this release and will be removed")
