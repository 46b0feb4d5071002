"""Records and candidates are inputs on a rerun: sealed when written, verified when read.

A record (``records/ID.json``) carries the sha256 of every file of its candidate
(``candidates/ID/``) and of its bench file, and is sealed with the sha256 of its own content.
An edited record no longer matches its seal; an edited, added or deleted candidate file no longer
matches the record. Whatever fails is discarded and recomputed, never trusted, and the chosen
candidate is verified once more, as the copy that becomes ``OUT/artifact``. The sensitivity and
held-out results cached beside the records are sealed the same way and tied to the sha256 of the
model they were measured on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from avf.data.vocabulary import file_sha256
from avf.documents import read_document
from avf.errors import InputError

#: The key holding a document's seal: the sha256 of the rest of it.
SEAL = "sha256"


class Cost(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["measured", "predicted"]
    source: str
    latency_p50_ms: float
    latency_p99_ms: float
    samples_per_s: float
    memory_mib: float
    energy_mj: float
    energy_status: str
    size_bytes: int


class Record(BaseModel):
    """One candidate as the search reads it back: settings, scores, cost, and the hashes that prove its files."""

    model_config = ConfigDict(extra="allow")

    id: str
    ratio: float
    precision: str
    calib_method: str | None
    keep_float: list[str]
    artifact: str
    bench: str | None
    parameters: int
    gap: float | None
    reference_gap: float | None
    retention: float | None
    #: The retention's one-sided lower bound (avf.compress.retention.gap_ratio_bound); absent in older records.
    retention_lower: float | None = None
    f1: float | None
    f1_retention: float | None
    eval_videos: int
    tensorrt_compatible: bool | None
    cost: Cost
    rejected_because: list[str]
    meets: bool
    files: dict[str, str]
    bench_sha256: str | None
    sha256: str


class Candidates(BaseModel):
    """``OUT/candidates.json``: the record of every candidate of the search, as it was sealed."""

    model_config = ConfigDict(extra="allow")

    format: Literal["avf-tune-candidates"]
    candidates: list[Record]


def read_candidates(out: Path) -> list[dict]:
    """The records of ``OUT/candidates.json``, read through their schema."""
    return read_document(Path(out) / "candidates.json", "a tune candidates list", Candidates)[0]["candidates"]


class Layer(BaseModel):
    node: str
    gap_lost: float


class Sensitivity(BaseModel):
    model_config = ConfigDict(extra="allow")

    ratio: float
    fp32_gap: float
    layers: list[Layer]
    model_sha256: str
    sha256: str


class HeldOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    videos: int
    reference_gap: float
    gap: float
    retention: float
    model_sha256: str
    sha256: str


def seal(document: dict) -> dict:
    """``document`` with its seal, the sha256 of its canonical JSON."""
    return {**document, SEAL: _digest(document)}


def _digest(document: dict) -> str:
    body = {key: value for key, value in document.items() if key != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_sealed(path: Path, what: str, model: type[BaseModel]) -> tuple[dict | None, str | None]:
    """(document, None) when it reads, has the schema's shape and matches its seal; else (None, why not)."""
    try:
        document, _ = read_document(path, what, model)
    except InputError as exc:
        return None, exc.problem
    if document[SEAL] != _digest(document):
        return None, "edited since it was written (its content no longer matches its sha256)"
    return document, None


def candidate_files(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file of a candidate (hidden temporaries excluded)."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def files_problem(folder: Path, expected: dict[str, str], where: str) -> str | None:
    """Why ``folder`` does not hold exactly the ``expected`` files with their sha256 (None: it does)."""
    if any(Path(name).name != name or name.startswith(".") for name in expected):
        return f"the record names files outside {where}"
    if not folder.is_dir():
        return f"{where} is missing"
    present = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    if present != set(expected):
        changes = [f"{name} missing" for name in sorted(set(expected) - present)]
        changes += [f"{name} added" for name in sorted(present - set(expected))]
        return f"{where} does not hold the recorded files ({', '.join(changes)})"
    for name, sha256 in expected.items():
        if sha256_or_none(folder / name) != sha256:
            return f"{where}/{name} does not match its recorded sha256"
    return None


def sha256_or_none(path: Path) -> str | None:
    """The file's sha256; None for anything that is not a readable regular file (a folder, a link, a FIFO)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return file_sha256(path)
    except (InputError, OSError):
        return None


def verified_record(out: Path, path: Path) -> tuple[dict | None, str | None]:
    """(record, None) when the record and its candidate's files are as the search wrote them; else (None, why not)."""
    record, problem = read_sealed(path, "tune record", Record)
    if record is None:
        return None, problem
    rid = path.stem
    if record["id"] != rid or record["artifact"] != f"candidates/{rid}" or \
            record["bench"] not in (None, f"bench/{rid}.json"):
        return None, f"names another candidate ({record['id']})"
    problem = files_problem(out / record["artifact"], record["files"], record["artifact"])
    if problem is None and record["bench"] is not None:
        if sha256_or_none(out / record["bench"]) != record["bench_sha256"]:
            problem = f"{record['bench']} is missing or does not match its recorded sha256"
    return (record, None) if problem is None else (None, problem)


def discard(out: Path, candidate_id: str) -> None:
    """Clear a candidate's slot in the working folder (record, artifact, bench), so it is built afresh."""
    for path in (out / "records" / f"{candidate_id}.json", out / "bench" / f"{candidate_id}.json",
                 out / "candidates" / candidate_id):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
