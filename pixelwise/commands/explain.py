"""``pixelwise explain [TOPIC ...] --out DIR``: the lecture's figures and numbers, computed from the library."""

from __future__ import annotations

import argparse

from pixelwise.commands import parsed

DATA_TOPICS = ("dense-crf",)  # the topics that take --data


def seed_value(text: str) -> int:
    """An argparse type: a seed numpy and torch both take."""
    value = parsed(text, int, "a whole number")
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be 0 to 2**32 - 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="the lecture gallery: figures and numbers computed from the library's own modules"
    )
    parser.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to run (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print each topic with a one-line description")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs, numbers.json files and index.html")
    parser.add_argument("--data", metavar="camvid:ROOT", help="CamVid for the dense-crf topic, e.g. "
                        "camvid:data/camvid (default: a synthetic scene)")
    parser.add_argument("--seed", type=seed_value, default=0,
                        help="seed of every random choice and training, 0 to 2**32 - 1 (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.explain import list_topics

    if args.list:
        topics = list_topics()
        width = max(len(name) for name, _ in topics)
        for name, description in topics:
            print(f"{name:<{width}}  {description}")
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (or --list to see the topics)")
    from pathlib import Path

    from pixelwise.explain import check_topics

    topics = check_topics(args.topics)  # a misspelt topic fails before torch is imported
    if args.data is not None:  # checked before any work, as the topics are
        if not any(topic in DATA_TOPICS for topic in topics):
            raise ValueError(f"--data is used by the {', '.join(DATA_TOPICS)} topic only, which this run does not "
                             "include")
        name, _, root = args.data.partition(":")
        if name != "camvid" or not root or not (Path(root) / "train").is_dir():
            raise ValueError(f"--data {args.data!r}: give camvid:ROOT, ROOT holding CamVid's train/ and "
                             "trainannot/ folders")
    from pixelwise.explain.gallery import run_gallery

    seconds = run_gallery(topics, args.out, data=args.data, seed=args.seed)
    count = f"{len(seconds)} topic{'s' if len(seconds) != 1 else ''}"
    print(f"wrote {count} in {sum(seconds.values()):.1f} s: {Path(args.out) / 'index.html'}")
    return 0
