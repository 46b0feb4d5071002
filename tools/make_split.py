"""Build the feature stores of a split recipe (tools/splits/*.json) in one command.

    python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out /work/avf-real

writes OUT/train and OUT/val (the standard split: train validate0000-0079 + validate0100-0174,
44,922 videos; validation validate0080-0099, 5,701 videos); ``--all`` also writes the nested
training subsets the learning curve uses (train_23k = the old issue-3 split, train_12k,
train_6k). Each store is made by the function behind ``avf data convert`` from the recipe's
explicit shard list (one glob cannot name two shard ranges), and its video count is checked
against the recipe. Existing stores made from the same shards are kept; ``--force`` rebuilds.
``--from-store train`` cuts the other stores from that store's rows instead (row for row what
converting their shards gives): the nested subsets on a machine that has the store but not the
TFRecords, e.g. a GPU machine the 45k store was copied to.
Then train with ``avf train --train OUT/train --val OUT/val ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def shard_list(recipe: dict, name: str, data: Path) -> list[Path]:
    ranges = recipe["stores"][name]["shards"]
    return [data / recipe["pattern"].format(i) for first, last in ranges for i in range(first, last + 1)]


def _up_to_date(store: Path, shards: list[Path]) -> bool:
    from avf.data.feature_store import is_store, read_manifest
    from avf.errors import InputError

    if not is_store(store):
        return False
    try:
        recorded = read_manifest(store)[1]
    except InputError:  # an older store (no array checksums) or a damaged manifest: rebuilt
        return False
    sources = [Path(s.path).name for s in recorded.sources]
    return sources == [s.name for s in shards]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="split recipe, e.g. tools/splits/yt8m_45k.json")
    parser.add_argument("--data", type=Path, required=True, help="folder holding the shards")
    parser.add_argument("--out", type=Path, required=True, help="folder for the feature stores (outside the repo)")
    parser.add_argument("--all", action="store_true", help="also the nested training subsets (learning curve)")
    parser.add_argument("--only", default=None, help="comma-separated store names to build")
    parser.add_argument("--force", action="store_true", help="rebuild stores that already exist")
    parser.add_argument("--from-store", default=None, metavar="NAME",
                        help="cut the other stores from this already built store's rows instead of reading the "
                             "shards again (nested subsets on a machine that has the store but not the TFRecords)")
    args = parser.parse_args(argv)

    from avf.data.feature_store import convert, subset
    from avf.errors import InputError

    from avf.documents import read_mapping

    recipe = read_mapping(args.recipe, "a split recipe")
    names = (args.only.split(",") if args.only else list(recipe["stores"]) if args.all else recipe["standard"])
    for name in names:
        if name not in recipe["stores"]:
            parser.error(f"{args.recipe} has no store {name!r}; it has {', '.join(recipe['stores'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        shards = shard_list(recipe, name, args.data)
        if args.from_store and name != args.from_store:
            store = args.out / name
            if _up_to_date(store, shards) and not args.force:
                print(f"{store}: up to date ({len(shards)} shards)")
                continue
            try:
                manifest = subset(args.out / args.from_store, store, [s.name for s in shards],
                                  force=args.force or store.exists())
            except InputError as exc:
                raise SystemExit(f"error: {exc}") from None
            print(f"{store}: {manifest['videos']:,} videos cut from {args.out / args.from_store} ({len(shards)} shards)")
            continue
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise SystemExit(f"error: {missing[0]}: file not found ({len(missing)} shards of {name} missing)")
        store = args.out / name
        if _up_to_date(store, shards) and not args.force:
            print(f"{store}: up to date ({len(shards)} shards)")
            continue
        try:
            manifest = convert(shards, store, force=args.force or store.exists())
        except InputError as exc:
            raise SystemExit(f"error: {exc}") from None
        expected = recipe["stores"][name].get("videos")
        if expected is not None and manifest["videos"] != expected:
            raise SystemExit(f"error: {store}: {manifest['videos']} videos, the recipe says {expected}")
        print(f"{store}: {manifest['videos']:,} videos from {len(shards)} shards "
              f"({manifest['conversion_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
