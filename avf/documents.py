"""The one way the toolkit reads its own JSON/YAML documents (reports, benches, manifests, profiles).

Every reader goes text -> parsed mapping -> pydantic model through here, so every failure is the
same kind of one-line InputError naming the file and, for a bad field, its dotted path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from avf.errors import InputError

Model = TypeVar("Model", bound=BaseModel)


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; a folder, a missing file, undecodable or empty text is refused."""
    if path.is_dir():
        raise InputError(path, f"is a directory; expected {what} file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except UnicodeDecodeError:
        raise InputError(path, f"not {what}: not UTF-8 text") from None
    if not text.strip():
        raise InputError(path, f"not {what}: the file is empty")
    return text


def parse_mapping(path: Path, what: str, text: str, language: str = "json") -> dict:
    """``text`` as a JSON (or YAML) mapping."""
    try:
        if language == "yaml":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not {what}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except Exception as exc:  # yaml.YAMLError, without importing yaml for JSON readers
        raise InputError(path, f"not {what}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"not {what}: expected a mapping of fields")
    return data


def first_problem(exc: ValidationError) -> str:
    """The first validation problem as ``field 'a.b': message``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"field '{where}': {error['msg']}"


def validate(path: Path, what: str, data: dict, model: type[Model]) -> Model:
    """``data`` checked against ``model``; the first problem names its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(path, f"invalid {what}: {first_problem(exc)}") from None


def read_document(path: str | Path, what: str, model: type[Model], language: str = "json") -> tuple[dict, Model]:
    """Read, parse and validate a document; returns the raw mapping and the validated model."""
    path = Path(path)
    data = parse_mapping(path, what, read_text(path, what), language)
    return data, validate(path, what, data, model)
