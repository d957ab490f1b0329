"""``pixelwise explain [TOPIC ...] --out DIR``: the lecture's figures and numbers, computed from the library."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="the lecture gallery: figures and numbers computed from the library's own modules"
    )
    parser.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to run (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print each topic with a one-line description")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs, numbers.json files and index.html")
    parser.add_argument("--data", metavar="NAME:ROOT", help="a real data set for the topics that can use one, "
                        "e.g. camvid:data/camvid (default: the built-in synthetic set)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice and training (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.explain import list_topics

    if args.list:
        topics = list_topics()
        width = max(len(name) for name, _ in topics)
        for name, description in topics:
            print(f"{name:<{width}}  {description}")
        return 0
    if args.out is None:
        raise ValueError("--out DIR is required (or --list to see the topics)")
    from pixelwise.explain import check_topics

    check_topics(args.topics)  # a misspelt topic fails before torch is imported
    from pixelwise.explain.gallery import run_gallery

    seconds = run_gallery(args.topics, args.out, data=args.data, seed=args.seed)
    print(f"wrote {len(seconds)} topics in {sum(seconds.values()):.1f} s: {args.out}/index.html")
    return 0
