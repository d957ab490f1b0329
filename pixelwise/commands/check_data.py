"""``pixelwise check-data NAME:ROOT``: scan a data set, list every problem, class frequencies and sizes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data", help="scan a data set split for unreadable files, size mismatches and bad labels"
    )
    parser.add_argument("data", metavar="NAME:ROOT", help="data set name and folder, e.g. camvid:data/camvid "
                        "('synthetic' alone for the built-in set)")
    parser.add_argument("--split", default="train", help="split to scan (default train)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a loader option, value in YAML (e.g. num_classes=3); repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.data import check_dataset, format_report, parse_data_source
    from pixelwise.train.config import parse_assignment

    name, root = parse_data_source(args.data)
    options = dict(parse_assignment(pair, "--option") for pair in args.option)
    report = check_dataset(name, root, args.split, **options)
    print(format_report(report))
    return 0 if report.ok else 1
