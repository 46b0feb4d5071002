"""``avf data``: synthesize, convert, inspect and verify YouTube-8M-format data.

Each takes ``--json``: its result as one JSON document on stdout (:mod:`avf.cli.json_output`), its lines on stderr.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avf.cli.json_output import emit, human, json_option
from avf.cli.options import option
from avf.cli.progress import bytes_progress, count_progress
from avf.data.feature_store import convert as convert_store
from avf.data.sources import expand_sources
from avf.data.summary import summarize
from avf.data.synthetic import synthesize

data_app = typer.Typer(help="YouTube-8M data: synthesize, convert to a feature store, inspect.", no_args_is_help=True)
stdout = Console()


class Level(str, Enum):
    video = "video"
    frame = "frame"


class FeatureDtype(str, Enum):
    float16 = "float16"
    float32 = "float32"


@data_app.command()
def synth(
    out: Path = typer.Argument(..., help="Directory to create (train/validate/test shards + vocabulary.csv)."),
    videos: int = option(synthesize, "videos", "--videos", "-n", min=10, help="Videos in all splits together."),
    classes: int = option(synthesize, "classes", "--classes", "-c", min=2, help="Vocabulary size."),
    level: Level = option(synthesize, "level", "--level", help="video: mean features; frame: 1 s uint8 frames."),
    seed: int = option(synthesize, "seed", "--seed", min=0, help="Same seed, same bytes."),
    force: bool = option(synthesize, "force", "--force", help="Replace OUT if it exists."),
    as_json: bool = json_option("data-synth"),
) -> None:
    """Write learnable synthetic data in the exact YouTube-8M TFRecord schema."""
    with count_progress(f"synthesizing {level.value}-level videos", videos) as advance:
        summary = synthesize(out, videos=videos, classes=classes, level=level.value, seed=seed,
                             force=force, progress=advance)
    if as_json:
        from avf.cli.json_output import SynthResult

        emit(SynthResult(out_dir=str(summary.out_dir), level=summary.level, classes=summary.classes, seed=summary.seed,
                         videos=summary.videos, files=[str(f) for f in summary.files]))
    console = human(as_json)
    console.print(f"wrote {summary.out_dir}: " + ", ".join(f"{split} {n} videos" for split, n in summary.videos.items())
                  + f"; {summary.classes} classes, {level.value} level", soft_wrap=True)


@data_app.command()
def convert(
    source: str = typer.Argument(..., help="TFRecord file, directory or quoted glob, e.g. 'data/train*.tfrecord'."),
    store: Path = typer.Argument(..., help="Feature store directory to create."),
    classes: int = option(convert_store, "num_classes", "--classes", "-c", min=1,
                          help="Class count (default: vocabulary.csv beside the data, else 3862)."),
    vocabulary: Path = option(convert_store, "vocabulary", "--vocabulary",
                              help="vocabulary.csv to check labels against."),
    dtype: FeatureDtype = option(convert_store, "feature_dtype", "--dtype",
                                 help="Video-level feature dtype (frame level stays uint8)."),
    force: bool = option(convert_store, "force", "--force",
                         help="Replace STORE if it exists (only once the new one is complete)."),
    as_json: bool = json_option("data-convert"),
) -> None:
    """Convert TFRecords into a memory-mapped feature store for training.

    --json prints the store's manifest.json (as written) on stdout.
    """
    shards = expand_sources(source)
    total = sum(shard.stat().st_size for shard in shards)
    with bytes_progress(f"converting {len(shards)} shards", total) as advance:
        manifest = convert_store(shards, store, num_classes=classes, vocabulary=vocabulary,
                                 feature_dtype=dtype.value, force=force, progress=advance)
    if as_json:
        emit(manifest)
    rate = manifest["videos"] / max(manifest["conversion_seconds"], 1e-9)
    console = human(as_json)
    console.print(f"wrote {store}: {manifest['videos']:,} {manifest['level']}-level videos, "
                  f"{manifest['num_classes']} classes, {manifest['labels_per_video']} labels/video "
                  f"({manifest['conversion_seconds']:.1f} s, {rate:,.0f} records/s)", soft_wrap=True)


@data_app.command()
def inspect(
    path: str = typer.Argument(..., help="TFRecord file, directory, quoted glob, or feature store."),
    classes: int = option(summarize, "num_classes", "--classes", "-c", min=1,
                          help="Class count to check labels against."),
    vocabulary: Path = option(summarize, "vocabulary", "--vocabulary", help="vocabulary.csv for class names."),
    top: int = option(summarize, "top", "--top", min=1, help="How many of the most frequent classes to list."),
    as_json: bool = json_option("data-inspect"),
) -> None:
    """Read everything (checking every CRC and the schema) and summarize counts, labels and features."""
    from avf.data.feature_store import is_store

    if is_store(path):
        result = summarize(path, classes, vocabulary, top)
    else:
        shards = expand_sources(path)
        with bytes_progress(f"reading {len(shards)} shards", sum(s.stat().st_size for s in shards)) as advance:
            result = summarize(shards, classes, vocabulary, top, progress=advance)
        result["source"] = path
    if as_json:
        emit(result)
        return
    _print_summary(result)


@data_app.command()
def verify(
    store: Path = typer.Argument(..., help="Feature store directory."),
    as_json: bool = json_option("data-verify"),
) -> None:
    """Check a feature store completely, as every command does when it opens one, and say what was checked."""
    from avf.data.feature_store import FeatureStore

    opened = FeatureStore(store)
    if as_json:
        from avf.cli.json_output import StoreVerifyResult

        emit(StoreVerifyResult(store=str(store), level=opened.level, videos=len(opened), num_classes=opened.num_classes,
                               arrays=len(opened.info.arrays), array_bytes=opened.array_bytes,
                               verify_seconds=round(opened.verify_seconds, 4)))
    console = human(as_json)
    console.print(f"{store}: intact: {len(opened):,} {opened.level}-level videos, {len(opened.info.arrays)} arrays "
                  f"({opened.array_bytes / 1e6:,.1f} MB) match the sha256 recorded at conversion, every feature is "
                  f"finite, labels and ids are valid ({opened.verify_seconds:.2f} s)", soft_wrap=True, markup=False)


def _print_summary(result: dict) -> None:
    table = Table(title=escape(str(result['source'])), show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("kind", f"{result['kind']}, {result['level']} level")
    table.add_row("videos", f"{result['videos']:,}")
    if "frames" in result:
        frames = result["frames"]
        table.add_row("frames per video", f"min {frames['min']}, mean {frames['mean']}, max {frames['max']} (total {frames['total']:,})")
    labels = result["labels"]
    table.add_row("classes", f"{result['num_classes']} ({labels['classes_present']} present)")
    table.add_row("labels per video", f"mean {labels['per_video_mean']}, min {labels['per_video_min']}, max {labels['per_video_max']}")
    table.add_row("top 10% classes hold", f"{labels['top10pct_classes_share']:.1%} of labels")
    table.add_row("most frequent", escape(", ".join(f"{c['name']} ({c['videos']})" for c in labels["top_classes"])))
    for key in ("rgb", "audio"):
        stats = result[key]
        table.add_row(f"{key} values", f"mean {stats['mean']:+.4f}, std {stats['std']:.4f}, "
                      f"range [{stats['min']:.3f}, {stats['max']:.3f}], mean L2 norm {stats['mean_l2_norm']:.3f}")
    stdout.print(table)
