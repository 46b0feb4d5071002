"""Write the JSON Schema of every ``--json`` form to ``docs/schemas/<form>.schema.json`` (and the manifest's to
``docs/manifest.schema.json``), from the pydantic models that :func:`avf.cli.json_output.schemas` names.

    python tools/write_schemas.py          # (re)write them; a schema of a form that no longer exists is removed
    python tools/write_schemas.py --check  # exit 1, naming each file, when one is missing, stale or left over

tests/test_json_output.py runs the check, so a model changed without its committed schema fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"
MANIFEST_SCHEMA = ROOT / "docs" / "manifest.schema.json"


def expected() -> dict[Path, str]:
    """Every schema file and the text it must hold."""
    from avf.cli.json_output import schema_text, schemas
    from avf.deploy.manifest import DeploymentManifest

    files = {SCHEMAS / f"{form}.schema.json": schema_text(model) for form, model in schemas().items()}
    files[MANIFEST_SCHEMA] = schema_text(DeploymentManifest)  # the document's own schema (avf.deploy.manifest)
    return files


def problems() -> list[str]:
    """What differs between docs/ and :func:`expected` (empty when up to date)."""
    wanted = expected()
    found = []
    for path, text in wanted.items():
        if not path.is_file():
            found.append(f"{path.relative_to(ROOT)}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{path.relative_to(ROOT)}: stale")
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        if path not in wanted:
            found.append(f"{path.relative_to(ROOT)}: no --json form has this schema")
    return found


def write() -> list[Path]:
    """Write every schema (only those that changed) and remove left-over ones; returns the files touched."""
    wanted = expected()
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    touched = []
    for path, text in wanted.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            touched.append(path)
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        if path not in wanted:
            path.unlink()
            touched.append(path)
    return touched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check that docs/ is up to date (exit 1 if not).")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.check:
        found = problems()
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("regenerate with: python tools/write_schemas.py", file=sys.stderr)
        return 1 if found else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}" if path.exists() else f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
