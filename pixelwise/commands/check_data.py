"""``pixelwise check-data NAME:ROOT``: scan a data set, list every problem, class frequencies and sizes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data", help="scan data set splits for unreadable files, size mismatches and label mistakes"
    )
    parser.add_argument("data", metavar="NAME:ROOT", help="data set name and folder, e.g. camvid:data/camvid "
                        "('synthetic' alone for the built-in set)")
    parser.add_argument("--split", dest="splits", action="append", metavar="SPLIT",
                        help="split to scan (default train); repeat it (--split train --split val) to also find "
                        "classes a later split has but the first lacks")
    parser.add_argument("--classes", type=int, metavar="N", help="number of classes (the num_classes option)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a loader option, value in YAML (e.g. 'label_map={255: 1}'); repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.data import check_splits, format_report, parse_data_source
    from pixelwise.train.config import parse_assignment

    name, root = parse_data_source(args.data)
    options = dict(parse_assignment(pair, "--option") for pair in args.option)
    if args.classes is not None:
        options["num_classes"] = args.classes
    reports = check_splits(name, root, args.splits or ["train"], **options)
    print("\n\n".join(format_report(report) for report in reports))
    return 0 if all(report.ok for report in reports) else 1
