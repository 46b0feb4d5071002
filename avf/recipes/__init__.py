"""Shipped training recipes: ``avf train --recipe NAME`` reads ``avf/recipes/NAME.yaml``.

A recipe is a settings document of :class:`avf.train.loop.TrainSettings` fields, read the same way as a
``--config`` file (:func:`avf.cli.options.resolve_settings`), with the measured figures behind it cited in its
comments (``docs/results/``). Precedence: a flag typed on the command line > ``--config`` > ``--recipe`` (or
:data:`DEFAULT_RECIPE` when none is given) > the settings model's default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from avf.errors import InputError

#: The recipe ``avf train`` applies when ``--recipe`` is not given. ``paper`` sets exactly TrainSettings' own
#: defaults, so ``avf train`` without a recipe trains as it always has (see the README, "Configs and recipes",
#: for why ``yt8m-best`` is not the default yet).
DEFAULT_RECIPE = "paper"


def recipe_paths() -> dict[str, Path]:
    """Every shipped recipe by name."""
    folder = resources.files("avf.recipes")
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if str(entry).endswith(".yaml")}


def recipe_path(name: str) -> Path:
    """The shipped recipe ``name``; an unknown name is one InputError listing the shipped ones."""
    paths = recipe_paths()
    if name not in paths:
        raise InputError(None, f"--recipe: no recipe {name!r} (shipped: {', '.join(sorted(paths))})")
    return paths[name]
