"""OUT is a working folder that outlives one run: a rerun of the same command continues the search.

Recognised by ``tune.json`` (format ``avf-tune``). A folder that is not ours is refused, even
with ``--force``; ours with other settings is refused unless ``--force`` (which starts over).
Every finished file is written atomically, so a kill -9 loses at most the candidate in flight;
its temporary leftovers (``.name.*.tmp``) are cleared on the next start.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from avf.atomic import atomic_write_text, check_output, json_file_says
from avf.errors import InputError

STATE = "tune.json"
is_tune_folder = json_file_says(STATE, "format", "avf-tune")
SUBFOLDERS = ("candidates", "records", "bench", "cache")


def open_workdir(out: Path, identity: dict, *, force: bool, inputs) -> tuple[dict, bool]:
    """Check OUT and make it ready; returns (state, resumed)."""
    out = Path(out)
    empty = out.is_dir() and not any(out.iterdir())
    if out.exists() and is_tune_folder(out):
        state = json.loads((out / STATE).read_text())
        check_output(out, force=True, directory=True, inputs=inputs, ours=is_tune_folder, what="tune folder")
        if state.get("identity") == identity and not force:
            _clear_leftovers(out)
            return state, True
        if not force:
            differing = sorted(k for k in set(identity) | set(state.get("identity", {}))
                               if identity.get(k) != state.get("identity", {}).get(k))
            raise InputError(out, f"holds a search with other settings ({', '.join(differing)} differ); pass --force "
                                  "to start it over, or choose another folder")
        _empty(out)
    else:
        check_output(out, force=force or empty, directory=True, inputs=inputs,
                     ours=lambda folder: empty, what="tune folder")
    out.mkdir(parents=True, exist_ok=True)
    state = {"format": "avf-tune", "version": 1, "identity": identity, "status": "running"}
    write_state(out, state)
    return state, False


def write_state(out: Path, state: dict) -> None:
    atomic_write_text(Path(out) / STATE, json.dumps(state, indent=2, default=str) + "\n")


def _clear_leftovers(out: Path) -> None:
    """Temporary files and folders a killed run left (atomic writers name them .NAME.*.tmp / .old)."""
    for folder in [out, *(out / name for name in SUBFOLDERS)]:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(".") and any(part in entry.name for part in (".tmp", ".old")):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def _empty(out: Path) -> None:
    """--force on our own folder: move everything aside, then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    for entry in out.iterdir():
        entry.rename(trash / entry.name)
    shutil.rmtree(trash, ignore_errors=True)
