"""Damaged feature stores (issue 19): every command that opens one refuses it the same way.

Each case builds its damaged store itself, from stores this module converts from synthetic
data, and runs the real commands (``avf eval``, ``avf train``, ``avf predict``, ``avf data
inspect``, ``avf data verify``; ``avf compress --eval`` and ``avf tune --eval`` for one case per
defect class): exit 2, exactly one ``error:`` line naming the store and the array or manifest
field, no traceback, and not one file created, changed or removed. Edits a script would make
consistently (an array rewritten and its manifest entry, sha256 included, updated to match) are
"resealed", so the checks behind the checksum are reached too. A Hypothesis property then
mutates stores at random (bytes flipped or cut in an array file, manifest fields deleted or
retyped, headers edited): opening one and reading every batch gives exactly the intact store's
arrays or an InputError naming the store, never another exception and never other numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from avf.data.feature_store import FeatureStore
from avf.errors import InputError
from cli_harness import cli, snapshot, working_in

CLASSES = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data, a video-level and a frame-level store, another video store, a tiny checkpoint."""
    root = tmp_path_factory.mktemp("damage")
    with working_in(root):
        for args in (("data", "synth", "data", "--videos", 60, "--classes", CLASSES, "--seed", 0),
                     ("data", "synth", "data2", "--videos", 60, "--classes", CLASSES, "--seed", 1),
                     ("data", "synth", "frames", "--videos", 20, "--classes", CLASSES, "--level", "frame", "--seed", 0),
                     ("data", "convert", "data/train*.tfrecord", "store"),
                     ("data", "convert", "data2/train*.tfrecord", "other"),
                     ("data", "convert", "frames/*.tfrecord", "fstore"),
                     ("train", "-m", "attend_fusion", "--train", "store", "--val", "store", "-o", "run", "--epochs", 1,
                      "--width", 16, "--attention-width", 16, "--heads", 2, "--threads", 1)):
            code, _, err = cli(*args)
            assert code == 0, (args, err)
        yield root


# ---- building damaged stores -------------------------------------------------------------------

def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def _write_manifest(store: Path, manifest) -> None:
    (store / "manifest.json").write_text(json.dumps(manifest, indent=2))


def reseal(store: Path, *names: str) -> None:
    """Update the manifest entries of rewritten arrays (dtype, shape, sha256) as a careful script would."""
    manifest = _manifest(store)
    for name in names:
        array = np.load(store / name, mmap_mode="r")
        manifest["arrays"][name] = {"dtype": str(array.dtype), "shape": list(array.shape),
                                    "sha256": hashlib.sha256((store / name).read_bytes()).hexdigest()}
    _write_manifest(store, manifest)


def rewrite(store: Path, name: str, change) -> None:
    """``change(array)`` returns the new array (or edits the copy in place); it is saved and resealed."""
    array = np.load(store / name).copy()
    result = change(array)
    array = array if result is None else result
    np.save(store / name, array)
    reseal(store, name)


def edit_manifest(change):
    def damage(store: Path) -> None:
        manifest = _manifest(store)
        change(manifest)
        _write_manifest(store, manifest)
    return damage


def set_item(name: str, where, value):
    def change(array):
        array[where] = value
    return lambda store: rewrite(store, name, change)


def replace_bytes(name: str, old: bytes, new: bytes):
    def damage(store: Path) -> None:
        data = (store / name).read_bytes()
        assert len(old) == len(new) and old in data
        (store / name).write_bytes(data.replace(old, new, 1))
    return damage


def flip_byte(name: str, from_end: int):
    def damage(store: Path) -> None:
        data = bytearray((store / name).read_bytes())
        data[-from_end] ^= 0x01  # the lowest mantissa bit of a float16 (little-endian)
        (store / name).write_bytes(bytes(data))
    return damage


def truncate(name: str, keep: int | None = None, drop: int = 0):
    def damage(store: Path) -> None:
        data = (store / name).read_bytes()
        (store / name).write_bytes(data[:keep] if keep is not None else data[: len(data) - drop])
    return damage


def swap_from_other(name: str):
    return lambda store: shutil.copyfile(store.parent / "other" / name, store / name)


def fifo(name: str):
    def damage(store: Path) -> None:
        (store / name).unlink()
        os.mkfifo(store / name)
    return damage


def old_version(store: Path) -> None:
    manifest = _manifest(store)
    manifest["version"] = 1
    for entry in manifest["arrays"].values():
        entry.pop("sha256")
    _write_manifest(store, manifest)


def empty_store(store: Path) -> None:
    np.save(store / "rgb.npy", np.zeros((0, 1024), np.float16))
    np.save(store / "audio.npy", np.zeros((0, 128), np.float16))
    np.save(store / "label_indptr.npy", np.zeros(1, np.int64))
    np.save(store / "label_indices.npy", np.zeros(0, np.int32))
    np.save(store / "ids.npy", np.zeros(0, "S1"))
    manifest = _manifest(store)
    manifest.update(videos=0, label_occurrences=0, labels_per_video=0.0, sources=[])
    _write_manifest(store, manifest)
    reseal(store, "rgb.npy", "audio.npy", "label_indptr.npy", "label_indices.npy", "ids.npy")


def non_utf8_id(ids):
    ids = ids.astype(f"S{max(ids.dtype.itemsize, 2)}")
    ids[2] = b"\xff\xfe"
    return ids


def bad_indptr(change):
    return lambda store: rewrite(store, "label_indptr.npy", change)


def _swap_neighbours(indptr):
    i = 5 + int(np.argmax(np.diff(indptr[5:]) > 0))  # video i has labels: indptr[i + 1] > indptr[i]
    indptr[i], indptr[i + 1] = indptr[i + 1], indptr[i]


def _overrun_frames(offsets):
    offsets[-1] += 1_000_000


# (case, base store, damage, what the error line must name besides the store, commands beyond the core four)
CASES = [
    # 1. labels
    ("label-too-large", "store", set_item("label_indices.npy", 3, CLASSES), ["label_indices.npy", "outside the 12"], ["compress"]),
    ("label-negative", "store", set_item("label_indices.npy", 0, -1), ["label_indices.npy", "label -1"], []),
    ("indptr-not-monotonic", "store", bad_indptr(_swap_neighbours), ["label_indptr.npy", "decreases"], []),
    ("indptr-not-from-0", "store", set_item("label_indptr.npy", 0, 1), ["label_indptr.npy", "starts at 1"], []),
    ("indptr-past-the-end", "store", set_item("label_indptr.npy", -1, 10_000), ["label_indptr.npy", "ends at 10000"], []),
    # 2. manifest structure
    ("manifest-list", "store", lambda s: (s / "manifest.json").write_text("[1, 2]"), ["manifest.json", "mapping"], ["compress"]),
    ("manifest-no-level", "store", edit_manifest(lambda m: m.pop("level")), ["manifest.json", "'level'"], []),
    ("manifest-no-num-classes", "store", edit_manifest(lambda m: m.pop("num_classes")), ["manifest.json", "'num_classes'"], []),
    ("manifest-no-arrays", "store", edit_manifest(lambda m: m.pop("arrays")), ["manifest.json", "'arrays'"], []),
    ("manifest-no-sources", "store", edit_manifest(lambda m: m.pop("sources")), ["manifest.json", "'sources'"], []),
    ("manifest-array-entry-a-string", "store", edit_manifest(lambda m: m["arrays"].update({"rgb.npy": "float16"})),
     ["manifest.json", "'arrays.rgb.npy'"], []),
    ("manifest-num-classes-null", "store", edit_manifest(lambda m: m.update(num_classes=None)), ["manifest.json", "'num_classes'"], []),
    ("manifest-num-classes-string", "store", edit_manifest(lambda m: m.update(num_classes="12")), ["manifest.json", "'num_classes'"], []),
    ("manifest-num-classes-negative", "store", edit_manifest(lambda m: m.update(num_classes=-12)), ["manifest.json", "'num_classes'"], []),
    ("manifest-num-classes-huge", "store", edit_manifest(lambda m: m.update(num_classes=10**20)), ["manifest.json", "'num_classes'"], []),
    ("manifest-videos-negative", "store", edit_manifest(lambda m: m.update(videos=-1)), ["manifest.json", "'videos'"], []),
    ("manifest-not-utf8", "store", lambda s: (s / "manifest.json").write_bytes(b'{"format": "\xff\xfe"}'),
     ["manifest.json", "UTF-8"], []),
    ("manifest-an-unknown-array", "store", edit_manifest(lambda m: m["arrays"].update({"../x.npy": m["arrays"]["ids.npy"]})),
     ["manifest.json", "'arrays'"], []),
    ("old-store-without-checksums", "store", old_version, ["manifest.json", "reconvert"], []),
    # 3. arrays inconsistent with each other
    ("rgb-one-row-short", "store", lambda s: rewrite(s, "rgb.npy", lambda a: a[:-1]), ["rgb.npy", "rows"], ["compress"]),
    ("rgb-512-wide", "store", lambda s: rewrite(s, "rgb.npy", lambda a: a[:, :512]), ["rgb.npy", "1024"], []),
    ("audio-float32", "store", lambda s: rewrite(s, "audio.npy", lambda a: a.astype(np.float32)), ["audio.npy", "float16"], []),
    ("indptr-float", "store", lambda s: rewrite(s, "label_indptr.npy", lambda a: a.astype(np.float64)),
     ["label_indptr.npy", "int64"], []),
    ("ids-not-utf8", "store", lambda s: rewrite(s, "ids.npy", non_utf8_id), ["ids.npy", "not UTF-8"], []),
    # 4. a header that changes the meaning of the bytes (not resealed: the header is checked before any byte is read)
    ("rgb-fortran-order", "store", replace_bytes("rgb.npy", b"'fortran_order': False,", b"'fortran_order': True, "),
     ["rgb.npy", "fortran_order"], ["compress"]),
    # 5. integrity
    ("rgb-from-another-store", "store", swap_from_other("rgb.npy"), ["rgb.npy", "sha256"], ["compress"]),
    ("rgb-mantissa-bit-flipped", "store", flip_byte("rgb.npy", 1001), ["rgb.npy", "sha256"], []),
    ("labels-byte-flipped", "store", flip_byte("label_indices.npy", 5), ["label_indices.npy", "sha256"], []),
    # 6. non-finite features
    ("rgb-nan", "store", set_item("rgb.npy", (3, 5), np.nan), ["rgb.npy", "NaN or infinite"], ["compress"]),
    ("audio-inf", "store", set_item("audio.npy", (7, 0), np.inf), ["audio.npy", "NaN or infinite"], []),
    # 7. empty or odd files
    ("rgb-0-bytes", "store", truncate("rgb.npy", keep=0), ["rgb.npy", "empty (0 bytes)"], ["compress"]),
    ("rgb-truncated", "store", truncate("rgb.npy", drop=3000), ["rgb.npy", "truncated"], []),
    ("rgb-bytes-appended", "store", lambda s: (s / "rgb.npy").open("ab").write(b"\0" * 64), ["rgb.npy", "after the end"], []),
    ("rgb-not-npy", "store", lambda s: (s / "rgb.npy").write_bytes(b"PK\x03\x04" + b"\0" * 300), ["rgb.npy", ".npy"], []),
    ("audio-fifo", "store", fifo("audio.npy"), ["audio.npy", "FIFO"], ["compress"]),
    ("manifest-fifo", "store", fifo("manifest.json"), ["manifest.json", "FIFO"], []),
    # 8. an empty store
    ("no-videos", "store", empty_store, ["holds no videos"], ["compress"]),
    # 9. frame level
    ("frame-offset-negative", "fstore", set_item("frame_offsets.npy", 3, -5), ["frame_offsets.npy"], []),
    ("frame-offsets-overrun", "fstore", lambda s: rewrite(s, "frame_offsets.npy", _overrun_frames),
     ["frame_offsets.npy", "ends at 1"], []),
    ("frame-offsets-start-late", "fstore", set_item("frame_offsets.npy", 0, 1), ["frame_offsets.npy", "starts at 1"], []),
    ("frame-label-too-large", "fstore", set_item("label_indices.npy", 0, 99), ["label_indices.npy", "outside the 12"], []),
    ("frame-rgb-byte-flipped", "fstore", flip_byte("rgb.npy", 77), ["rgb.npy", "sha256"], []),
    ("frame-manifest-no-total-frames", "fstore", edit_manifest(lambda m: m.pop("total_frames")), ["manifest.json", "total_frames"], []),
]


def commands(store: str, extra: list[str]) -> dict[str, list]:
    runs = {
        "eval": ["eval", "run/best.pt", "--data", store],
        "train": ["train", "-m", "attend_fusion", "--train", store, "--val", "store", "-o", "new_run", "--epochs", 1,
                  "--width", 16, "--attention-width", 16, "--heads", 2, "--threads", 1],
        "predict": ["predict", "run/best.pt", "--data", store, "-o", "predictions.csv"],
        "inspect": ["data", "inspect", store],
        "verify": ["data", "verify", store],
    }
    if "compress" in extra:  # one case per defect class
        runs["compress"] = ["compress", "run/best.pt", "--eval", store, "-o", "compressed"]
        runs["tune"] = ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "tuned", "--eval", store, "--time-budget", 1]
    return runs


@pytest.mark.parametrize("case, base, damage, mentions, extra", CASES, ids=[c[0] for c in CASES])
def test_every_command_refuses_the_damaged_store(world, case, base, damage, mentions, extra):
    store = world / f"bad-{case}"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(world / base, store)
    damage(store)
    before = snapshot(world)
    for command, args in commands(store.name, extra).items():
        code, out, err = cli(*args)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (case, command, code, err)
        assert store.name in lines[0], (case, command, lines[0])
        for word in mentions:
            assert word in lines[0], (case, command, word, lines[0])
        assert snapshot(world) == before, (case, command, "wrote or changed files")


def test_the_intact_stores_pass_every_check(world):
    for name in ("store", "fstore"):
        code, out, err = cli("data", "verify", name)
        assert code == 0 and "intact" in out and "match the sha256" in out, err
    manifest = _manifest(world / "store")
    assert manifest["version"] == 2
    assert all(len(entry["sha256"]) == 64 for entry in manifest["arrays"].values())


def test_a_resealed_fortran_header_is_still_refused(world, tmp_path):
    """A script that edits the header *and* updates the sha256 gets no transposed features either."""
    store = tmp_path / "store"
    shutil.copytree(world / "store", store)
    replace_bytes("rgb.npy", b"'fortran_order': False,", b"'fortran_order': True, ")(store)
    manifest = _manifest(store)
    manifest["arrays"]["rgb.npy"]["sha256"] = hashlib.sha256((store / "rgb.npy").read_bytes()).hexdigest()
    _write_manifest(store, manifest)
    with pytest.raises(InputError, match="fortran_order"):
        FeatureStore(store)


# ---- the property ----------------------------------------------------------------------------

def read_everything(path: Path) -> dict[str, np.ndarray]:
    """Every number a command can get from the store, read the ways commands read it."""
    store = FeatureStore(path)
    out = {"ids": np.array(store.ids), "indptr": np.asarray(store.label_indptr).copy()}
    labels = [store.labels(i) for i in range(len(store))]
    out["labels"] = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if store.level == "video":
        parts = [store.batch(np.arange(start, min(start + 16, len(store)))) for start in range(0, len(store), 16)]
        out["rgb"] = np.concatenate([p[0] for p in parts])
        out["audio"] = np.concatenate([p[1] for p in parts])
        out["dense"] = np.concatenate([p[2] for p in parts])
    else:
        frames = [store.features(i) for i in range(len(store))]
        out["rgb"] = np.concatenate([f[0] for f in frames])
        out["audio"] = np.concatenate([f[1] for f in frames])
    return out


FIELDS = ["format", "version", "level", "videos", "num_classes", "rgb_dim", "audio_dim", "feature_dtype",
          "label_occurrences", "arrays", "sources", "vocabulary", "total_frames", "created_by",
          "arrays.rgb.npy", "arrays.rgb.npy.dtype", "arrays.rgb.npy.shape", "arrays.rgb.npy.sha256",
          "arrays.label_indptr.npy.shape", "arrays.ids.npy.dtype", "sources.0", "sources.0.records",
          "vocabulary.sha256"]
VALUES = st.sampled_from([None, "12", -1, 0, 1, 13, 1.5, float("nan"), [], {}, True, "video", "frame", 10**20, [0]])
FILES = ["rgb.npy", "audio.npy", "label_indptr.npy", "label_indices.npy", "ids.npy", "frame_offsets.npy", "manifest.json"]


def _walk(manifest: dict, dotted: str):
    """(container, key) of a dotted path, or None where the path does not exist."""
    parts = dotted.split(".npy")
    keys = []
    for i, part in enumerate(parts):
        for piece in part.strip(".").split(".") if part.strip(".") else []:
            keys.append(int(piece) if piece.isdigit() else piece)
        if i < len(parts) - 1:
            keys[-1] += ".npy"
    node = manifest
    for key in keys[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return (node, keys[-1]) if isinstance(node, (dict, list)) else None


@st.composite
def mutations(draw):
    base = draw(st.sampled_from(["store", "fstore"]))
    kind = draw(st.sampled_from(["flip", "truncate", "header", "delete", "retype"]))
    if kind in ("delete", "retype"):
        return base, kind, draw(st.sampled_from(FIELDS)), draw(VALUES) if kind == "retype" else None
    name = draw(st.sampled_from(FILES if base == "fstore" else FILES[:5] + FILES[6:]))
    fraction = draw(st.floats(0, 1, exclude_max=True))
    return base, kind, name, (fraction, draw(st.integers(1, 255)))


def apply(store: Path, mutation) -> None:
    _, kind, name, arg = mutation
    if kind in ("delete", "retype"):
        manifest = _manifest(store)
        found = _walk(manifest, name)
        if found is None:
            return
        node, key = found
        if kind == "delete":
            if isinstance(node, dict):
                node.pop(key, None)
            elif isinstance(key, int) and key < len(node):
                node.pop(key)
        elif isinstance(node, dict) or (isinstance(key, int) and key < len(node)):
            node[key] = arg
        (store / "manifest.json").write_text(json.dumps(manifest))
        return
    fraction, xor = arg
    data = bytearray((store / name).read_bytes())
    if kind == "truncate":
        (store / name).write_bytes(bytes(data[: int(fraction * len(data))]))
        return
    if kind == "header" and name != "manifest.json":
        header = 10 + int.from_bytes(data[8:10], "little")  # a version 1.0 header, as the store writes
        at = 8 + int(fraction * (header - 8))
        data[at] = 32 + xor % 95  # a printable character: the header stays text numpy tries to parse
    else:
        at = int(fraction * len(data))
        data[at] ^= xor
    (store / name).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def intact(world):
    return {name: read_everything(world / name) for name in ("store", "fstore")}


@settings(max_examples=80, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations())
def test_a_mutated_store_reads_as_the_intact_one_or_is_refused_naming_it(world, intact, mutation):
    store = world / "mutated"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(world / mutation[0], store)
    apply(store, mutation)
    try:
        got = read_everything(store)
    except InputError as exc:
        assert str(store) in str(exc), (mutation, str(exc))
        event(f"{mutation[1]}: refused")
        return
    event(f"{mutation[1]}: read as the intact store")
    want = intact[mutation[0]]
    assert got.keys() == want.keys(), mutation
    for key in want:
        if key == "dense":  # its width is num_classes, which a manifest edit may raise without changing a label
            width = want[key].shape[1]
            assert got[key].shape[1] >= width and not got[key][:, width:].any(), mutation
            assert np.array_equal(got[key][:, :width], want[key]), mutation
            continue
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), (mutation, key)
