"""``pixelwise check-data NAME:ROOT``: scan a data set, list every problem, class frequencies and sizes."""

from __future__ import annotations

import argparse

import yaml

from pixelwise.data import check_dataset, format_report
from pixelwise.train.runtime import resolve_root


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


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def run(args: argparse.Namespace) -> int:
    name, _, root = args.data.partition(":")
    report = check_dataset(name, resolve_root(root or None), args.split, **parse_options(args.option))
    print(format_report(report))
    return 0 if report.ok else 1
