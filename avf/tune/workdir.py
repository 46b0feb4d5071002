"""OUT is a working folder that outlives one run: a rerun of the same command continues the search.

Recognised by ``tune.json`` (format ``avf-tune``), whose ``identity`` (the settings and the content
of every input) says which search it holds. A folder that is not ours is refused, even with
``--force``; ours with other settings is refused unless ``--force`` (which starts over). One run
at a time: the folder is locked (:func:`avf.atomic.folder_lock`) for the whole run, before anything
in it is read or changed. Every finished file is written atomically, so a kill -9 loses at most
the candidate in flight; its temporary leftovers (``.NAME.XXXXXXXX.tmp``, and the like, named by
:mod:`avf.atomic`) are cleared on the next start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from avf.atomic import atomic_write_text, check_output, empty_directory, folder_lock, json_file_says, remove_temporaries
from avf.documents import read_document
from avf.errors import InputError

STATE = "tune.json"
VERSION = 2  # 2: records sealed and carrying their candidates' sha256; inputs identified by content
is_tune_folder = json_file_says(STATE, "format", "avf-tune")
SUBFOLDERS = ("candidates", "records", "bench", "cache")


class TuneState(BaseModel):
    """What a rerun reads back from tune.json: the folder's identity (the rest is rewritten every run)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["avf-tune"]
    version: int
    identity: dict[str, Any]
    status: str
    runs: int = 0


@contextmanager
def open_workdir(out: Path, identity: dict, *, force: bool, inputs,
                 describe=lambda key: key) -> Iterator[tuple[dict, bool]]:
    """Check OUT, lock it and make it ready; yields (state, resumed) with the lock held."""
    out = Path(out)
    ours = out.exists() and is_tune_folder(out)
    empty = out.is_dir() and not any(out.iterdir())
    check_output(out, force=ours or force or empty, directory=True, inputs=inputs,
                 ours=is_tune_folder if ours else (lambda folder: empty), what="tune folder")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "tune folder"):
        if ours and not force:
            state = read_document(out / STATE, "tune folder state", TuneState)[0]
            if state["identity"] != identity or state["version"] != VERSION:
                differing = sorted(k for k in set(identity) | set(state["identity"])
                                   if identity.get(k) != state["identity"].get(k))
                named = "; ".join(describe(k) for k in differing) or f"tune.json version {state['version']}"
                raise InputError(out, f"holds a search with other settings (changed: {named}); pass --force "
                                      "to start it over, or choose another folder")
            _clear_leftovers(out)
            yield state, True
            return
        if ours:
            empty_directory(out)  # --force on our own folder: everything in it goes, the folder (and lock) stays
        state = {"format": "avf-tune", "version": VERSION, "identity": identity, "status": "running"}
        write_state(out, state)
        yield state, False


def write_state(out: Path, state: dict) -> None:
    atomic_write_text(Path(out) / STATE, json.dumps(state, indent=2, default=str) + "\n")


def _clear_leftovers(out: Path) -> None:
    """Temporary files and folders a killed run left: only names of :mod:`avf.atomic`'s shape."""
    for folder in [out, *(out / name for name in SUBFOLDERS)]:
        remove_temporaries(folder)
