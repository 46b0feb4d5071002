"""What a command says, and where: exit 70 for a bug (one ``internal error:`` line, the traceback in a file,
never on the terminal), exit 130 for an abort, ``-q``/``-v``/``--log-file`` on the root command, data on
stdout and progress (training's per-epoch lines included) on stderr.

Every case runs the real command: in this process (``cli``) or as a process of its own (``avf_process``),
with the failure injected for real (a library function the command calls raises)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from cli_harness import avf_process, cli

#: A line of the log file: a timestamp to the millisecond, the level, the logger.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +avf[.\w]*: ")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _traceback_file(line: str) -> Path:
    match = re.search(r"\(full traceback: (.+)\)$", line)
    assert match, line
    return Path(match.group(1))


@pytest.fixture
def broken_profiles(monkeypatch, tmp_path):
    """``avf profiles`` fails with a RuntimeError from the library function it calls; tracebacks go to tmp_path."""
    import avf.deploy.profiles

    def boom():
        raise RuntimeError("injected failure\nits second line")

    monkeypatch.setattr(avf.deploy.profiles, "all_profiles", boom)
    monkeypatch.setenv("AVF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tracebacks"


def test_a_bug_is_one_line_exit_70_and_the_traceback_in_a_file(broken_profiles):
    code, out, err = cli("profiles")
    assert code == 70, (code, out, err)
    lines = _lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("internal error: RuntimeError: injected failure (full traceback: "), lines[0]
    assert "second line" not in lines[0]
    saved = _traceback_file(lines[0])
    assert saved.parent == broken_profiles and saved.is_file()
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "profiles_command" in text
    assert "RuntimeError: injected failure\nits second line" in text and "avf profiles" in text
    code, _, err = cli("profiles")  # a second failure: a file of its own, the first one kept
    assert code == 70 and _traceback_file(_lines(err)[0]) != saved and saved.is_file()


def test_a_bug_with_log_file_puts_the_traceback_in_the_log(broken_profiles, tmp_path):
    log = tmp_path / "avf.log"
    code, _, err = cli("--log-file", log, "profiles")
    assert code == 70 and _lines(err) == [f"internal error: RuntimeError: injected failure (full traceback: {log})"]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: injected failure" in text
    assert "internal error: RuntimeError" in text and "exit 70" in text
    assert not broken_profiles.exists()  # the log holds it: no second copy
    for line in text.splitlines():
        assert LOG_LINE.match(line) or line.startswith(("  ", "Traceback", "RuntimeError", "its second", "avf ")), line


def test_a_bug_whose_traceback_cannot_be_written_says_so_and_prints_it(monkeypatch, broken_profiles, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("AVF_CACHE", str(blocker))  # tracebacks/ cannot be made under a file
    code, _, err = cli("profiles")
    assert code == 70
    first, *rest = err.splitlines()
    assert first.startswith("internal error: RuntimeError: injected failure (the traceback could not be written")
    assert "it follows" in first and rest[0] == "Traceback (most recent call last):" and "injected failure" in err


def test_a_bug_in_a_process_of_its_own_shows_no_traceback(monkeypatch, tmp_path):
    """The command as a shell runs it (typer's own exception hook installed): still one line, exit 70."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(  # runs before avf's main: the library function fails for real
        "import avf.deploy.profiles\n"
        "def boom():\n"
        "    raise RuntimeError('injected in a process')\n"
        "avf.deploy.profiles.all_profiles = boom\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("AVF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TYPER_STANDARD_TRACEBACK", raising=False)
    result = avf_process("profiles", timeout=300)
    assert result.returncode == 70, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    assert lines[0].startswith("internal error: RuntimeError: injected in a process (full traceback: ")
    saved = _traceback_file(lines[0])
    assert saved.parent == tmp_path / "cache" / "tracebacks"
    assert "RuntimeError: injected in a process" in saved.read_text() and result.stdout == ""


def test_an_abort_exits_130_not_1_which_means_mismatch(monkeypatch):
    import typer

    import avf.deploy.profiles

    def interrupted():
        raise KeyboardInterrupt  # typer >= 0.22 exits 130 for it; older click turned it into typer.Abort

    monkeypatch.setattr(avf.deploy.profiles, "all_profiles", interrupted)
    code, _, err = cli("profiles")
    assert code == 130 and _lines(err) in ([], ["interrupted (SIGINT): nothing partial was left behind"]), err

    def aborted():
        raise typer.Abort()

    monkeypatch.setattr(avf.deploy.profiles, "all_profiles", aborted)
    code, _, err = cli("profiles")
    assert code == 130 and _lines(err) == ["error: aborted"], err


def test_mapped_errors_keep_their_codes(monkeypatch, tmp_path):
    """Only what nothing else covers is an internal error: bad input, OS errors and memory keep exit 2."""
    import avf.deploy.profiles
    from avf.errors import InputError

    for raised in (InputError(tmp_path / "x.yaml", "bad"), PermissionError(13, "Permission denied", "x.yaml"),
                   MemoryError()):
        def fails(raised=raised):
            raise raised

        monkeypatch.setattr(avf.deploy.profiles, "all_profiles", fails)
        code, _, err = cli("profiles")
        assert code == 2 and len(_lines(err)) == 1 and _lines(err)[0].startswith("error: "), err


def test_verbose_adds_info_then_debug_lines(tmp_path):
    code, out, err = cli("data", "synth", tmp_path / "a", "--videos", 20, "--classes", 5)
    assert code == 0 and not [line for line in _lines(err) if line.startswith(("info:", "debug:"))], err
    code, _, err = cli("-v", "data", "synth", tmp_path / "b", "--videos", 20, "--classes", 5)
    assert code == 0 and not [line for line in _lines(err) if line.startswith("debug:")], err
    assert any(line.startswith("info: synthesizing") for line in _lines(err)), err
    assert any(line.startswith("info: exit 0 after") for line in _lines(err)), err
    code, _, err = cli("-vv", "data", "synth", tmp_path / "c", "--videos", 20, "--classes", 5)
    assert code == 0 and any(line.startswith("debug: avf ") for line in _lines(err)), err
    assert "train 16 videos" in out  # data stays on stdout, at every verbosity


def test_log_file_has_timestamps_and_appends_to_its_own_log_only(monkeypatch, tmp_path):
    import avf.deploy.profiles

    real = avf.deploy.profiles.all_profiles

    def chatty():
        logging.getLogger("somelib").info("third-party chatter")
        logging.getLogger("somelib").warning("third-party warning")
        logging.getLogger("avf.deploy.profiles").debug("avf debug detail")
        return real()

    monkeypatch.setattr(avf.deploy.profiles, "all_profiles", chatty)
    log = tmp_path / "run.log"
    code, out, err = cli("--log-file", log, "profiles")
    assert code == 0 and "x86-cpu" in out and "avf debug detail" not in err, err
    text = log.read_text()
    lines = text.splitlines()
    third_party = re.compile(r"^\d{4}-.* WARNING +somelib: ")
    assert lines and all(LOG_LINE.match(line) or third_party.match(line) for line in lines), text
    assert "avf debug detail" in text and "third-party warning" in text and "third-party chatter" not in text
    assert "x86-cpu" not in text  # data is not logged
    code, _, _ = cli("--log-file", log, "profiles")
    assert code == 0 and log.read_text().startswith(text) and len(log.read_text()) > len(text)  # appended
    other = tmp_path / "notes.txt"
    other.write_text("the user's own notes\n")
    code, _, err = cli("--log-file", other, "profiles")
    assert code == 2 and "not a log avf wrote" in err and other.read_text() == "the user's own notes\n"
    assert logging.getLogger("avf").handlers == [] and logging.getLogger("avf").propagate  # undone after the run


def test_quiet_and_verbose_together_are_refused(tmp_path):
    code, _, err = cli("-q", "-v", "--log-file", tmp_path / "x.log", "profiles")
    assert code == 2 and _lines(err) == ["error: -q/--quiet and -v/--verbose contradict each other: choose one"]
    assert not (tmp_path / "x.log").exists()


def test_quiet_hides_progress_bars():
    from rich.console import Console

    from avf.cli import progress

    terminal = progress._Terminal(stderr=True, force_terminal=True)
    assert terminal.is_terminal
    progress.configure(quiet_=True)
    try:
        assert not terminal.is_terminal and not progress.stderr.is_terminal  # so every bar is disabled
    finally:
        progress.reset()
    assert terminal.is_terminal and isinstance(progress.stderr, Console)


def test_shortcuts_take_the_root_options_first():
    from avf.cli.app import _root_options

    assert _root_options(["-vv", "--log-file", "t.log", "-q", "--model", "m", "-v"]) == (
        ["-vv", "--log-file", "t.log", "-q"], ["--model", "m", "-v"])
    assert _root_options(["--log-file=t.log", "run/best.pt"]) == (["--log-file=t.log"], ["run/best.pt"])


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logging_data")
    assert cli("data", "synth", root / "data", "--videos", 200, "--classes", 12, "--seed", 3)[0] == 0
    return root / "data"


def _train(data: Path, out: Path, *root_options) -> tuple[int, str, str]:
    return cli(*root_options, "train", "-m", "attend_fusion", "--train", data / "train*.tfrecord", "--val",
               data / "validate*.tfrecord", "-o", out, "--epochs", 1, "--width", 16, "--attention-width", 16,
               "--heads", 2, "--threads", 1, "--distill-weight", 0.3)


def test_training_epoch_lines_go_to_stderr_and_the_log_and_quiet_hides_them(synth_data, tmp_path):
    pytest.importorskip("torch")
    code, out, err = _train(synth_data, tmp_path / "plain")
    assert code == 0, err
    assert re.search(r"^epoch 1  loss \d", err, re.M) and "epoch 1" not in out, (out, err)
    assert "note: --distill-weight does nothing" in err and "checkpoints in" in out
    log = tmp_path / "train.log"
    code, out, err = _train(synth_data, tmp_path / "quiet", "-q", "--log-file", log)
    assert code == 0 and err == "" and "epoch 1" not in out, (out, err)  # no note, header or epoch line
    text = log.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d [\d:.]+ INFO +avf.console: epoch 1  loss ", text, re.M), text
    assert "note: --distill-weight does nothing" in text and "exit 0" in text


def test_old_spellings_still_work_with_a_note(tmp_path):
    """--batch (train), --bench-duration (tune) and --bench-seconds (demo) are kept, hidden, for one release: they set
    the same field as the new spelling and say so."""
    from avf.cli.options import old_spelling  # noqa: F401  (the one helper all three use)

    code, out, err = cli("train", "-m", "attend_fusion", "--train", tmp_path / "none*.tfrecord", "--batch", 8,
                         "-o", tmp_path / "run")
    assert "--batch is now --batch-size" in err
    assert code == 2  # no such data: refused after the note, nothing written
    assert not (tmp_path / "run").exists()
    code, _, err = cli("tune", tmp_path / "none.pt", "-p", "x86-cpu", "-o", tmp_path / "t", "--bench-duration", 0.1)
    assert "--bench-duration is now --duration" in err and code == 2
