"""The one output-safety path: every command checks its output here, then writes it atomically.

Rules, the same for every command: an existing output needs ``--force``; an output is never one
of the command's inputs, nor a folder that holds one (nor the current directory); ``--force``
replaces only a folder this toolkit wrote (a recognizer per kind says so); the place must be
writable before any work starts; the new file or folder is written under a temporary name beside
the target and renamed into place only when complete, so an error, Ctrl-C or SIGTERM leaves the
old output (or nothing) and no partial one.
"""

from __future__ import annotations

import errno
import glob as globlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from avf.documents import read_mapping
from avf.errors import InputError

#: Says whether an existing folder is an output of ours of the expected kind (so --force may replace it).
Recognizer = Callable[[Path], bool]


def _default_mode(directory: bool) -> int:
    """What a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp give 0o600/0o700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while a temporary path is created and not yet under cleanup's watch.

    A signal in that gap (right after mkdtemp returns, say) would leave the temporary behind; held
    here, it is delivered on the next line, inside the block that removes it.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    previous = mask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def json_file_says(name: str, key: str, *values: str) -> Recognizer:
    """A recognizer: the folder holds JSON file ``name`` whose ``key`` is one of ``values``.

    Read through :func:`avf.documents.read_mapping` like every document of ours (a FIFO in its place is
    refused, not waited on); anything it refuses is simply not ours.
    """

    def recognize(folder: Path) -> bool:
        try:
            data = read_mapping(folder / name, f"{name} of avf")
        except InputError:
            return False
        return data.get(key) in values

    return recognize


def holds_file(name: str) -> Recognizer:
    return lambda folder: (folder / name).is_file()


def _writable_place(final: Path) -> None:
    """Refuse before any work when the output cannot be created (a file in the way, no permission)."""
    parent = final.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(final, f"cannot create it: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(final, f"cannot create it: no permission to write in {parent}")


def check_output(final: str | Path, *, force: bool, directory: bool, inputs: Iterable[str | Path | None] = (),
                 ours: Recognizer | None = None, what: str = "output") -> Path:
    """Check an output path before any work starts; returns it. Every refusal is one InputError."""
    final = Path(final)
    if str(final).strip() in ("", "-"):
        raise InputError(str(final), f"not a usable {what} path")
    resolved = final.resolve()
    if final.exists() or final.is_symlink():
        if directory and not final.is_dir():
            raise InputError(final, f"exists and is not a directory (the {what} must be one)")
        if not directory and final.is_dir():
            raise InputError(final, f"is a directory; the {what} is a file: give a file name")
    for given, source in _input_paths(inputs):
        if source == resolved:
            raise InputError(final, f"is an input of this command; refusing to write the {what} over it")
        if directory and source.is_relative_to(resolved):
            raise InputError(final, f"holds an input of this command ({given}); refusing to use it for the {what}")
    if directory and Path.cwd().resolve().is_relative_to(resolved):
        raise InputError(final, f"is the current directory or holds it; choose a new folder for the {what}")
    if final.exists():
        if not force:
            raise InputError(final, "already exists (pass --force to replace it)")
        if directory and (ours is None or not ours(final)):
            raise InputError(final, f"exists and is not {_article(what)} written by avf; refusing to replace it "
                                    "even with --force (choose another path, or remove it yourself)")
    _writable_place(final)
    return final


def _input_paths(inputs: Iterable[str | Path | None]) -> Iterator[tuple[str, Path]]:
    """Each input as given and resolved; a glob also yields every file it matches."""
    for given in inputs:
        if given is None:
            continue
        text = str(given)
        yield text, Path(text).expanduser().resolve()
        if not Path(text).exists() and globlib.has_magic(text):
            for match in globlib.glob(text):
                yield match, Path(match).resolve()


def temporary_prefix(final: Path, suffix: str) -> str:
    """``.NAME.`` for a temporary beside ``final``, shortened so prefix + random part + suffix stay
    within the file-system's name limit (255 bytes) even when NAME itself is near it."""
    name = final.name
    limit = _NAME_MAX - 2 - 8 - len(suffix.encode())  # the two dots and tempfile's 8 random characters
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > limit:
        name = encoded[:limit].decode("utf-8", "ignore")
    return f".{name}."


_NAME_MAX = 255


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive lock on an output folder for the whole run, so a second run on it is refused.

    The lock is an ``flock`` on the folder itself: nothing is written for it, and the kernel drops it
    when the process ends, however it ends (``kill -9`` included), so no stale lock is ever left.
    """
    import fcntl

    folder = Path(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise InputError(folder, f"cannot open the {what} to lock it: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(folder, f"another avf process is using this {what} now; wait for it to finish "
                                     "(or stop it), or choose another folder") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _article(what: str) -> str:
    return ("an " if what[:1] in "aeiou" else "a ") + what


#: errno values that say the place cannot take the output (a full disk, a quota, the file-size limit, an I/O
#: error, a read-only file system): the user can fix them, so they are reported naming the output.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


class _WriteFailed(InputError):
    """An output that could not be written (full disk, ...), named."""


@contextmanager
def _write_failures_named(final: Path) -> Iterator[None]:
    """Turn a failed write of ``final`` (full disk, ...) into one InputError naming it; other errors pass unchanged.

    The OSError of a full disk carries no file name (``write`` has none), so without this the user would
    read "No space left on device" and not know which output could not be written. Where atomic outputs
    nest (a shard written by :func:`atomic_file` inside the temporary folder of an :func:`atomic_directory`),
    the outermost names it: that is the output the user named, the inner one lives in a temporary.
    """
    try:
        yield
    except _WriteFailed as exc:
        raise _WriteFailed(final, exc.problem) from None
    except OSError as exc:
        if exc.errno not in _WRITE_FAILURES:
            raise
        raise _WriteFailed(final, f"cannot write it: {exc.strerror or exc}") from None


#: The random part tempfile puts in every temporary's name, between :func:`temporary_prefix` and the suffix.
_RANDOM = r"[a-z0-9_]{8}"
#: Any temporary of this module: ``.NAME.XXXXXXXX.tmp`` (or ``.tmp.EXT``: a suffix that keeps a writer's format,
#: e.g. ``.tmp.onnx``) and the ``.NAME.XXXXXXXX.old`` folder a replaced output is moved into before it is deleted.
_TEMPORARY = re.compile(r"\..+\." + _RANDOM + r"(\.tmp(\.[A-Za-z0-9]+)?|\.old)")


def stale_temporaries(final: str | Path, suffix: str = ".tmp") -> list[Path]:
    """The temporaries :func:`atomic_file` (or :func:`atomic_directory`) would name for ``final`` and that a
    process killed mid-write (``kill -9``) left beside it: ``.NAME.XXXXXXXX.tmp`` and nothing else, so a
    sweep never touches a user's own ``.*.tmp`` file."""
    final = Path(final)
    pattern = re.compile(re.escape(temporary_prefix(final, suffix)) + _RANDOM + re.escape(suffix))
    if not final.parent.is_dir():
        return []
    return [entry for entry in final.parent.iterdir() if pattern.fullmatch(entry.name)]


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Remove every temporary this module's writers left in ``folder`` (a process killed mid-write), whatever
    output each was for: for a folder all of whose outputs are ours (a tune work folder), where the names of
    the outputs are not known in advance. Only names of this module's shape (``.NAME.XXXXXXXX.tmp``,
    ``.tmp.EXT``, ``.old``) are touched, never a user's ``.notes.tmp`` or ``.bashrc.old``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [entry for entry in folder.iterdir() if _TEMPORARY.fullmatch(entry.name)]
    for entry in removed:
        _remove(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _trash_beside(final: Path) -> Path:
    """A fresh hidden ``.NAME.XXXXXXXX.old`` folder beside ``final``, for what is about to be deleted: moved
    there first (one rename), an output is gone from its place at once, whatever happens to the deletion."""
    return Path(tempfile.mkdtemp(prefix=temporary_prefix(final, ".old"), suffix=".old", dir=final.parent))


def empty_directory(folder: str | Path) -> None:
    """Remove everything inside ``folder`` (an output of ours, which the caller has checked and locked), keeping
    the folder itself: its entries are moved aside into a trash beside it, then deleted."""
    folder = Path(folder)
    trash = _trash_beside(folder)
    try:
        for entry in folder.iterdir():
            entry.rename(trash / entry.name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_file(final: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``final``; it replaces ``final`` only if the block succeeds.

    The temp name keeps ``suffix`` (some writers pick the format from it, e.g. ``.tmp.onnx``);
    on any failure (Ctrl-C and SIGTERM included) it is removed, so ``final`` is either the old
    file or the complete new one.
    """
    final = Path(final)
    tmp = None
    try:
        with _signals_deferred():
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=temporary_prefix(final, suffix), suffix=suffix, dir=final.parent)
            except OSError as exc:
                raise InputError(final, f"cannot write it: {exc.strerror or exc}") from None
            os.close(fd)
            tmp = Path(name)
        with _write_failures_named(final):
            yield tmp
            tmp.chmod(_default_mode(directory=False))
            with _signals_deferred():
                os.replace(tmp, final)
                tmp = None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_text(final: str | Path, text: str) -> None:
    with atomic_file(final) as tmp:
        tmp.write_text(text)


@contextmanager
def create_file(final: str | Path, *, force: bool, inputs: Iterable[str | Path | None] = (), what: str = "output",
                suffix: str = ".tmp") -> Iterator[Path]:
    """A user-named output file: the checks of :func:`check_output`, then :func:`atomic_file`."""
    final = check_output(final, force=force, directory=False, inputs=inputs, what=what)
    with atomic_file(final, suffix=suffix) as tmp:
        yield tmp


@contextmanager
def atomic_directory(final: str | Path, force: bool = False, *, ours: Recognizer | None = None,
                     inputs: Iterable[str | Path | None] = (), what: str = "output") -> Iterator[Path]:
    """Yield a temp directory beside ``final``; rename it into place only if the block succeeds.

    With ``force`` an existing ``final`` that ``ours`` recognizes is replaced, and removed only
    after the new one is in.
    """
    final = check_output(final, force=force, directory=True, inputs=inputs, ours=ours, what=what)
    tmp = None
    try:
        with _signals_deferred():
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(final, ".tmp"), suffix=".tmp", dir=final.parent))
            except OSError as exc:
                raise InputError(final, f"cannot create it: {exc.strerror or exc}") from None
            tmp.chmod(_default_mode(directory=True))  # mkdtemp makes it private; the result gets normal permissions
        with _write_failures_named(final):
            yield tmp
            with _signals_deferred():  # the swap is never left half done: old folder out, new one not yet in
                if final.exists():
                    trash = _trash_beside(final)
                    os.replace(final, trash / final.name)
                    os.replace(tmp, final)
                    tmp = None
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    os.replace(tmp, final)
                    tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
