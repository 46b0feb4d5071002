"""``--json``: every command that reports a result prints exactly one JSON document on stdout, valid against its
committed schema (docs/schemas/<form>.schema.json), with its human output on stderr and its exit code unchanged.

Each case runs the real command (tests/cli_harness.py ``cli``) on the session's tiny run and artifact. The
whole of stdout must parse as one JSON document (so no human text is on it); the document is validated against
the committed schema file (by ``jsonschema`` when installed, else by :func:`conforms`, a checker of the keywords
pydantic's schemas use) and by the form's pydantic model; the schema files must be what tools/write_schemas.py
writes now.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from cli_harness import cli

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"

#: Commands whose --json form has no model yet (ad-hoc dicts in train_commands.py / tune_commands.py): named here so
#: that a new --json without a schema fails test_every_json_option_has_a_schema.
NO_SCHEMA_YET: set[str] = set()


# ----------------------------------------------------------------------------- checking a document


def _write_schemas_tool():
    spec = importlib.util.spec_from_file_location("write_schemas", ROOT / "tools" / "write_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}
#: Keywords that constrain nothing (``discriminator`` is OpenAPI's, which JSON Schema validators ignore too).
_ANNOTATIONS = {"title", "description", "default", "$defs", "examples", "discriminator"}


def conforms(value, schema: dict, root: dict, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (JSON Schema, the keywords pydantic writes); an unknown keyword is a
    problem too, so that a schema this cannot check fails instead of passing unchecked."""
    problems = []
    for key in set(schema) - _ANNOTATIONS - {"$ref", "anyOf", "oneOf", "allOf", "type", "enum", "const", "minimum", "maximum",
                                             "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength",
                                             "maxLength", "items", "minItems", "maxItems", "properties", "required",
                                             "additionalProperties", "propertyNames"}:
        problems.append(f"{where}: keyword {key!r} not checked here (install jsonschema)")
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        problems += conforms(value, root["$defs"][name], root, where)
    if "anyOf" in schema and not any(not conforms(value, option, root, where) for option in schema["anyOf"]):
        problems.append(f"{where}: {value!r:.80} matches none of anyOf")
    if "oneOf" in schema and sum(not conforms(value, option, root, where) for option in schema["oneOf"]) != 1:
        problems.append(f"{where}: {value!r:.80} does not match exactly one of oneOf")
    for option in schema.get("allOf", []):
        problems += conforms(value, option, root, where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return problems + [f"{where}: {value!r:.80} is not of type {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: {value!r} is not {schema['const']!r}")
    if _TYPES["number"](value):
        for key, holds in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
                           ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b)):
            if key in schema and not holds(value, schema[key]):
                problems.append(f"{where}: {value} breaks {key} {schema[key]}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            problems.append(f"{where}: length {len(value)} out of bounds")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: {len(value)} items out of bounds")
        if "items" in schema:
            for i, item in enumerate(value):
                problems += conforms(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}: {name!r} is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if "propertyNames" in schema:
                problems += conforms(name, schema["propertyNames"], root, f"{where} key {name!r}")
            if name in properties:
                problems += conforms(item, properties[name], root, f"{where}.{name}")
            elif extra is False:
                problems.append(f"{where}: {name!r} is not allowed")
            elif isinstance(extra, dict):
                problems += conforms(item, extra, root, f"{where}.{name}")
    return problems


def check_form(form: str, document) -> None:
    """``document`` is valid against the committed schema of ``form`` and its pydantic model."""
    from avf.cli.json_output import schemas

    schema = json.loads((SCHEMAS / f"{form}.schema.json").read_text())
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is None:
        problems = conforms(document, schema, schema)
        assert not problems, "\n".join(problems[:20])
    else:
        jsonschema.validate(document, schema)
    schemas()[form].model_validate_json(json.dumps(document))


def run_json(form: str, *args, code: int | tuple[int, ...] = 0, says: str | None = None):
    """``avf ARGS --json``: exit ``code`` (or one of them), stdout one JSON document valid for ``form``, ``says``
    (a phrase of the human output) on stderr and not on stdout."""
    status, out, err = cli(*args, "--json")
    assert status in (code if isinstance(code, tuple) else (code,)), f"exit {status}\nstdout: {out}\nstderr: {err}"
    document = json.loads(out)  # the whole of stdout: one document and nothing else
    check_form(form, document)
    if says is not None:
        assert says in err, err
        assert says not in out
    return document, err


# ----------------------------------------------------------------------------- the schemas


def test_committed_schemas_are_what_the_tool_writes():
    problems = _write_schemas_tool().problems()
    assert not problems, "\n".join(problems) + "\nregenerate with: python tools/write_schemas.py"


def test_every_json_option_has_a_schema():
    import typer

    from avf.cli.app import app
    from avf.cli.json_output import schemas

    def walk(command, path):
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])
        if any("--json" in getattr(param, "opts", ()) for param in command.params):
            yield "-".join(path)

    forms = set(walk(typer.main.get_command(app), []))
    assert {"bench", "deploy-manifest", "deploy-verify", "data-inspect"} <= forms  # the walk finds them
    missing = forms - set(schemas()) - NO_SCHEMA_YET
    assert not missing, f"--json without a model in avf.cli.json_output.schemas(): {sorted(missing)}"
    assert set(schemas()) <= forms, "a schema for a command without --json"


def test_the_checker_finds_what_is_wrong():
    """:func:`conforms` is no rubber stamp (it is what runs where jsonschema is not installed)."""
    schema = json.loads((SCHEMAS / "deploy-verify.schema.json").read_text())
    good = {"manifest": "m.json", "artifact_dir": ".", "ok": True, "problems": [],
            "files": [{"name": "model.onnx", "ok": True, "problem": None}]}
    assert conforms(good, schema, schema) == []
    for broken in ({**good, "ok": "yes"}, {**good, "extra": 1}, {k: v for k, v in good.items() if k != "files"},
                   {**good, "files": [{"name": "model.onnx", "ok": True, "problem": 3}]}):
        assert conforms(broken, schema, schema)


# ----------------------------------------------------------------------------- data


def test_data_synth_convert_verify_inspect(tmp_path):
    synth, _ = run_json("data-synth", "data", "synth", tmp_path / "d", "--videos", 30, "--classes", 6,
                        says="wrote")
    assert synth["videos"]["train"] > 0 and "vocabulary.csv" in synth["files"]
    store = tmp_path / "store"
    manifest, _ = run_json("data-convert", "data", "convert", tmp_path / "d" / "train*.tfrecord", store, says="wrote")
    assert manifest == json.loads((store / "manifest.json").read_text())  # the manifest as written
    verified, _ = run_json("data-verify", "data", "verify", store, says="match the sha256")
    assert verified["videos"] == manifest["videos"] and verified["arrays"] == len(manifest["arrays"])
    for source, kind in ((tmp_path / "d" / "train*.tfrecord", "tfrecord"), (store, "feature-store")):
        summary, _ = run_json("data-inspect", "data", "inspect", source)
        assert summary["kind"] == kind and summary["videos"] == manifest["videos"]


def test_frame_level_forms(tmp_path):
    run_json("data-synth", "data", "synth", tmp_path / "f", "--videos", 10, "--classes", 6, "--level", "frame")
    manifest, _ = run_json("data-convert", "data", "convert", tmp_path / "f" / "train*.tfrecord", tmp_path / "s")
    assert manifest["level"] == "frame" and manifest["total_frames"] > 0
    summary, _ = run_json("data-inspect", "data", "inspect", tmp_path / "f" / "train*.tfrecord")
    assert summary["frames"]["total"] == manifest["total_frames"]


# ----------------------------------------------------------------------------- models and profiles


def test_models_and_profiles():
    rows, _ = run_json("models", "models", "--classes", 10)
    assert {row["name"] for row in rows} >= {"attend_fusion"}
    profiles, _ = run_json("profiles", "profiles")
    assert "x86-cpu" in {p["name"] for p in profiles}
    one, _ = run_json("profiles", "profiles", "x86-cpu")
    assert one["name"] == "x86-cpu"


# ----------------------------------------------------------------------------- bench, predict, deploy


@pytest.fixture(scope="module")
def shipped(tiny_run, tiny_artifact, tmp_path_factory):
    """A copy of the tiny artifact to write beside (manifests, checks), its bench and its check."""
    root = tmp_path_factory.mktemp("json_forms")
    artifact = root / "best.fp32"
    shutil.copytree(tiny_artifact, artifact)
    bench, err = run_json("bench", "bench", artifact, "--batch", "1", "--duration", 0.05, "-o", root / "bench.json",
                          says="results in")
    assert bench == json.loads((root / "bench.json").read_text())  # the record as written
    check, err = run_json("deploy-check", "deploy", "check", artifact, "--data",
                          tiny_run / "data" / "validate*.tfrecord", "-o", root / "check.json",
                          says="; written to")
    assert check == json.loads((root / "check.json").read_text())
    return root, artifact


def test_bench_of_a_checkpoint(tiny_run, tmp_path):
    bench, _ = run_json("bench", "bench", tiny_run / "run" / "best.pt", "--batch", "1,2", "--duration", 0.05,
                        "-o", tmp_path / "b.json", says="results in")
    assert bench["target_facts"]["kind"] == "checkpoint" and len(bench["scenarios"]["offline"]) == 2


def test_predict(tiny_run, shipped, tmp_path):
    result, _ = run_json("predict", "predict", shipped[1], "--data", tiny_run / "data" / "validate*.tfrecord",
                         "-o", tmp_path / "p.csv", says="videos ->")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert result["videos"] == len(lines) - 1 > 0


def test_plan(shipped):
    root, artifact = shipped
    alone, err = run_json("deploy-plan", "deploy", "plan", artifact, "-p", "x86-cpu", says="memory (predicted)")
    assert alone["measured"] is None and alone["prediction"]["predicted"] is True
    measured, _ = run_json("deploy-plan", "deploy", "plan", artifact, "-p", "x86-cpu", "--bench", root / "bench.json")
    assert measured["measured"]["single-stream"]["p50_ms"] > 0


def test_manifest_and_verify(shipped, tmp_path):
    root, artifact = shipped
    manifest, err = run_json("deploy-manifest", "deploy", "manifest", artifact, "-p", "x86-cpu", "--bench",
                             root / "bench.json", "-o", root / "manifest.json", "--force", code=(0, 3))
    written = json.loads((root / "manifest.json").read_text())
    assert manifest == written and "deployable" in err
    result, _ = run_json("deploy-verify", "deploy", "verify", root / "manifest.json", says="every file matches")
    assert result["ok"] and [f["name"] for f in result["files"]] == [f["name"] for f in written["files"]]
    assert all(f["ok"] and f["problem"] is None for f in result["files"])


def test_verify_mismatch_still_exits_1_after_its_json(shipped, tmp_path):
    shutil.copytree(shipped[1], tmp_path / "best.fp32")
    code, _, err = cli("deploy", "manifest", tmp_path / "best.fp32", "-p", "x86-cpu", "-o", tmp_path / "m.json")
    assert code in (0, 3), err
    with open(tmp_path / "best.fp32" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    (tmp_path / "best.fp32" / "report.json").unlink()
    result, err = run_json("deploy-verify", "deploy", "verify", tmp_path / "m.json", code=1, says="mismatch:")
    assert not result["ok"] and len(result["problems"]) == 2
    problems = {f["name"]: f["problem"] for f in result["files"] if not f["ok"]}
    assert problems["model.onnx"].startswith("sha256 mismatch") and problems["report.json"] == "missing"


def test_not_deployable_still_exits_3_after_its_json(shipped, tmp_path):
    root, artifact = shipped
    profile = json.loads(cli("profiles", "x86-cpu", "--json")[1])
    tight = tmp_path / "tight.yaml"
    tight.write_text(json.dumps({**profile, "name": "tight", "budgets": {"latency_ms": 1e-9, "memory_mib": 1e-9}}))
    manifest, err = run_json("deploy-manifest", "deploy", "manifest", artifact, "-p", tight, "-o",
                             root / "tight.json", code=3, says="NOT deployable")
    assert manifest["decision"]["deployable"] is False
    (root / "tight.json").unlink()


def test_triton(shipped, tmp_path):
    result, _ = run_json("deploy-triton", "deploy", "triton", shipped[1], "-o", tmp_path / "repo", "--cpu",
                         says="Triton model")
    assert result["platform"] == "onnxruntime_onnx" and result["instance_kind"] == "KIND_CPU"
    assert set(result["files"]) == {"config.pbtxt", "1/model.onnx"}
    assert (Path(result["folder"]) / "config.pbtxt").is_file()


def test_compress_and_build_torch_aot(tiny_run, tmp_path):
    torch_aot = pytest.importorskip("avf.compress.torch_aot")
    if reason := torch_aot.unavailable_reason("cpu"):
        pytest.skip(reason)
    artifact = tmp_path / "aot"
    report, _ = run_json("compress", "compress", tiny_run / "run" / "best.pt", "--backend", "torch-aot",
                         "--min-retention", 0, "-o", artifact)  # avf compress --json: report.json as written
    assert report == json.loads((artifact / "report.json").read_text())
    facts, _ = run_json("deploy-build", "deploy", "build", artifact, "--backend", "torch-aot", "--device", "cpu",
                        says="compiled in")
    report = json.loads((artifact / "report.json").read_text())
    assert facts["backend"] == "torch-aot" and facts["sha256"] == report["files"]["model.pt2"]["sha256"]


def test_demo(tmp_path):
    summary, _ = run_json("demo", "demo", "-o", tmp_path / "demo", "--videos", 100, "--epochs", 1, "--duration",
                          0.1, "--threads", 1, says="every file is in")
    assert summary == json.loads((tmp_path / "demo" / "summary.json").read_text())


# ----------------------------------------------------------------------------- the training stage's forms


def test_eval_train_and_tune_json(tiny_run, tmp_path):
    data = tiny_run / "data"
    metrics, _ = run_json("eval", "eval", tiny_run / "run" / "best.pt", "--data", data / "validate*.tfrecord")
    assert 0 <= metrics["metrics"]["gap"] <= 1
    result, err = run_json("train", "train", "-m", "attend_fusion", "--train", data / "train*.tfrecord", "--val",
                           data / "validate*.tfrecord", "-o", tmp_path / "run", "--epochs", 1, "--width", 16,
                           "--attention-width", 16, "--heads", 2, "--threads", 1, says="epoch 1")
    assert result["epochs_done"] == 1 and result["best_epoch"] == 1
    state, _ = run_json("tune", "tune", tmp_path / "run" / "best.pt", "-p", "x86-cpu", "-o", tmp_path / "tune",
                        "--ratio-step", 0.45, "--calib-size", 64, "--duration", 0.05, "--threads", 1,
                        "--time-budget", 0.3, "--max-keep-float", 0, code=(0, 3))
    assert state["profile"] == "x86-cpu" and state["candidates"] >= 1
