"""One exception family for bad user input, so the CLI can print one line and exit 2; the exit codes."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """What every avf command's exit status means (the README's table), defined here once.

    Besides these: 128 + N when the command was stopped by signal N (130 Ctrl-C or an abort, 143 SIGTERM,
    129 SIGHUP): it unwound and removed its temporary outputs (``avf/cli/app.py`` ``run``).
    """

    #: Done.
    OK = 0
    #: ``avf-deploy verify`` found a missing or changed file.
    MISMATCH = 1
    #: Bad input: one ``error:`` line, nothing written.
    BAD_INPUT = 2
    #: Written, but below its bar: an artifact rejected by the retention gate, a manifest that is not
    #: deployable, an ``avf tune`` search where no candidate meets every constraint. A fleet script can
    #: tell it from success and from bad input.
    BELOW_BAR = 3
    #: A bug in avf (or in a library it calls), not in the input: an exception no other code covers. One
    #: ``internal error: <type>: <message> (full traceback: <file>)`` line; the traceback goes to that file
    #: (``--log-file`` when given, else ``$AVF_CACHE/tracebacks/``), never to the terminal. EX_SOFTWARE of
    #: BSD's sysexits.h, so a script can tell it from bad input and report it.
    INTERNAL = 70


class InputError(ValueError):
    """Bad input the user can fix: names the file (and byte offset when known) and the problem."""

    def __init__(self, path: str | Path | None, problem: str, offset: int | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.offset = offset
        where = "" if self.path is None else self.path
        if offset is not None:
            where += f" (record at byte {offset})"
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self):
        # Rebuild from the parts, so errors cross process boundaries (DataLoader workers).
        return (self.__class__, (self.path, self.problem, self.offset))


class RecordError(InputError):
    """A TFRecord that is corrupt, truncated, or not a TFRecord at all."""


class SchemaError(InputError):
    """A record that parses but breaks the YouTube-8M schema (sizes, NaN, label range)."""
