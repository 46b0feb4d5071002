"""``avf models``: the registry, with our parameter counts beside the paper's."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from avf.cli.json_output import emit, json_option
from avf.data import AUDIO_DIM, RGB_DIM


def models_command(
    classes: int = typer.Option(4716, "--classes", "-c", min=1, help="Class count (the paper's counts are for 4716)."),
    rgb_dim: int = typer.Option(RGB_DIM, "--rgb-dim", min=1),
    audio_dim: int = typer.Option(AUDIO_DIM, "--audio-dim", min=1),
    as_json: bool = json_option("models"),
) -> None:
    """List every model of the zoo: name, parameters (counted, not estimated), the paper's count."""
    from avf.models import MODEL_NAMES, PAPER_PARAMS, REGISTRY, parameter_count

    rows = []
    for name in MODEL_NAMES:
        paper = PAPER_PARAMS[name]
        rows.append({"name": name, "params": parameter_count(name, num_classes=classes, rgb_dim=rgb_dim, audio_dim=audio_dim),
                     "paper_params": None if paper is None else int(paper * 1_000_000)})
    if as_json:
        emit(rows)
        return
    table = Table(title=f"avf model zoo ({classes} classes, {rgb_dim}+{audio_dim} inputs)", title_justify="left")
    for column, justify in (("name", "left"), ("paper's name", "left"), ("params (M)", "right"),
                            ("paper (M)", "right"), ("difference", "right")):
        table.add_column(column, justify=justify)
    for row in rows:
        paper = row["paper_params"]
        table.add_row(row["name"], REGISTRY[row["name"]].paper_name, f"{row['params'] / 1e6:.1f}",
                      "-" if paper is None else f"{paper / 1e6:.0f}",
                      "-" if paper is None else f"{row['params'] / paper - 1:+.1%}")
    Console().print(table)
