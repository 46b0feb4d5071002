"""The one way the toolkit reads its own JSON/YAML documents (reports, benches, manifests, profiles).

Every reader goes text -> parsed mapping -> pydantic model through here, so every failure is the
same kind of one-line InputError naming the file and, for a bad field, its dotted path. Every file
the toolkit reads (these documents, vocabularies, checkpoints, TFRecords) is opened through
:func:`open_regular`, so a FIFO, socket or device is refused at once instead of blocking forever.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from avf.errors import InputError

Model = TypeVar("Model", bound=BaseModel)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def check_regular_file(path: Path, what: str, error: type[InputError] = InputError) -> os.stat_result:
    """Refuse, before opening it, anything but a regular file.

    The one check every file the toolkit reads goes through (documents, vocabularies, checkpoints,
    TFRecords): opening a FIFO blocks until a writer comes and a device such as /dev/zero never
    ends, so either would hang the command instead of failing it. ``what`` names what was
    expected ("a deployment manifest").
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _refusal(path, exc, "stat", error) from None
    if stat.S_ISDIR(info.st_mode):
        raise error(path, f"is a directory, expected {what}")
    if not stat.S_ISREG(info.st_mode):
        raise error(path, f"is {_kind(info.st_mode)}, not a regular file")
    return info


def _refusal(path: Path, exc: OSError, doing: str, error: type[InputError]) -> InputError:
    """What a failed stat or open of ``path`` tells the user, as one error."""
    if isinstance(exc, FileNotFoundError):
        return error(path, "file not found")
    if isinstance(exc, PermissionError):
        return error(path, "permission denied")
    return error(path, f"cannot {doing} ({exc.strerror or exc})")


def open_regular(path: Path, what: str, error: type[InputError] = InputError, buffering: int = -1):
    """``path`` opened for binary reading, checked to be a regular file before and after opening.

    O_NONBLOCK: should a FIFO be swapped in after the check, opening it still cannot block, and
    the check on the open descriptor refuses it.
    """
    check_regular_file(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _refusal(path, exc, "open", error) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(path, f"is {_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; a folder, a FIFO or device, a missing file, undecodable or empty text is refused."""
    try:
        with open_regular(path, what) as fh:
            text = fh.read().decode("utf-8")
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


def read_mapping(path: str | Path, what: str, language: str = "json") -> dict:
    """Read and parse a document into its mapping, not yet validated: for a reader that checks something first
    (a format tag, to say "not a bench result" rather than name a field), a recognizer that asks one key, or a
    document of ours without a schema."""
    path = Path(path)
    return parse_mapping(path, what, read_text(path, what), language)


def read_document(path: str | Path, what: str, model: type[Model], language: str = "json") -> tuple[dict, Model]:
    """Read, parse and validate a document; returns the raw mapping and the validated model."""
    path = Path(path)
    data = read_mapping(path, what, language)
    return data, validate(path, what, data, model)
