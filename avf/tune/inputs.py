"""Every input of ``avf tune`` checked before any work or output, and identified by its content.

The README promises that bad input is refused before anything is written, so the profile, the
checkpoint, ``--batch`` and every data role (``--eval``, ``--train``, ``--calib``, ``--test``:
found, readable, of the checkpoint's class count and feature sizes) are checked here, before the
working folder is touched.

A rerun resumes only when its inputs hold the same content as the first run's: the identity
carries the checkpoint's sha256 and, per data role, the sha256 its files already carry (each
TFRecord shard's own, or the sources a feature store's manifest records). A file replaced at the
same path is then named as a changed setting instead of being mixed with earlier results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avf.errors import InputError

#: Data role -> (what it is for, the option that names it).
ROLES = {"eval": ("selection", "--eval"), "train": ("distillation", "--train"),
         "calib": ("calibration", "--calib"), "test": ("held-out", "--test")}


@dataclass
class Inputs:
    """What the search is given, checked: the profile, the checkpoint and its model, the data."""

    profile: object  # DeviceProfile
    payload: dict  # the loaded checkpoint
    model: object  # the checkpoint's model, in eval mode: the FP32 reference
    specs: dict  # role -> data spec (None: not given and none recorded in the checkpoint)
    data: dict  # role -> TrainingData for the roles the search reads itself (eval, calib, test)
    content: dict  # identity entries: the checkpoint's and each data role's sha256
    paths: list  # every input path, so the working folder is never one of them nor holds one


def check_inputs(options) -> Inputs:
    """Load and check every input of ``options`` (a TuneOptions); any problem is one InputError."""
    from avf.compress.pipeline import _data, _recorded
    from avf.data.vocabulary import file_sha256
    from avf.deploy.profiles import load_profile
    from avf.threads import check_batch_fits
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint

    profile = load_profile(options.profile)
    payload = load_checkpoint(options.checkpoint)
    if payload["model"].get("tokens", "single") != "single":
        raise InputError(options.checkpoint, "only single-token models can be compressed (and so tuned)")
    model = model_from_checkpoint(payload, options.checkpoint).eval()
    check_batch_fits(options.batch, model.rgb_dim + model.audio_dim + payload["num_classes"], "--batch")
    settings = payload.get("settings") or {}
    specs = {"eval": options.eval or _recorded(settings.get("val")),
             "train": options.train or _recorded(settings.get("train")),
             "calib": options.calib or _recorded(settings.get("train")), "test": options.test}
    if specs["eval"] is None:
        raise InputError(None, "avf tune needs selection data: pass --eval (the checkpoint records none that "
                               "exists here)")
    loaded, by_spec = {}, {}
    for role, spec in specs.items():
        if spec is None:
            continue
        if spec not in by_spec:  # train and calib are often the same data: read it once
            what, option = ROLES[role]
            by_spec[spec] = _data(spec, payload, model, f"{what} ({option})", options.checkpoint)
        loaded[role] = by_spec[spec]
    content = {"checkpoint_sha256": file_sha256(options.checkpoint), "profile_definition": profile.model_dump(),
               **{f"{role}_data": _content(loaded.get(role)) for role in ROLES}}
    kept = {role: data for role, data in loaded.items() if role != "train"}  # compress reads its own training data
    if options.eval_size:
        import numpy as np

        kept["eval"] = kept["eval"].subset(np.arange(min(options.eval_size, len(kept["eval"]))))
    profile_file = Path(options.profile) if Path(options.profile).is_file() else None
    return Inputs(profile=profile, payload=payload, model=model, specs=specs, data=kept, content=content,
                  paths=[options.checkpoint, profile_file, *specs.values()])


def _content(data) -> dict | None:
    """A data role's identity by content: the sha256 its files carry, its video count and vocabulary hash."""
    if data is None:
        return None
    return {"sha256": data.sources_summary()["sha256"], "videos": len(data),
            "vocabulary_sha256": data.vocabulary_sha256}


def describe_difference(key: str) -> str:
    """An identity key as the user knows it, for "holds a search with other settings (changed: ...)"."""
    if key == "checkpoint_sha256":
        return "the checkpoint's content (sha256)"
    if key == "profile_definition":
        return "the profile's definition"
    role = key.removesuffix("_data")
    if key.endswith("_data") and role in ROLES:
        return f"the {ROLES[role][1]} data's content (sha256)"
    return f"--{key.replace('_', '-')}"
