"""``pixelwise predict``: segment images, folders, globs or videos with a saved run.

Writes ``<name>.png`` (indexed-colour mask in the data set's palette) per image, optionally
``<name>_overlay.png`` (image + mask + legend), ``<name>_overlay.mp4`` per video, and ``stats.csv``
(pixel count of every class per image or frame). A file that cannot be read is reported and skipped;
the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse

from pixelwise.commands import add_runtime_options, positive_int
from pixelwise.infer.options import DEFAULT_TILE, MODES

# DeepLab v3 evaluates "+MS +Flip" at scales 0.5 ... 1.75; three scales keep the CPU cost at 6 passes.
TTA_SCALES = (0.75, 1.0, 1.25)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="segment images, folders, globs or videos")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs or video files")
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="saved model directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--overlay", action="store_true", help="also write overlays with a legend")
    parser.add_argument("--opacity", type=float, default=0.5, help="overlay opacity of the mask (default 0.5)")
    parser.add_argument("--mode", choices=MODES, default=MODES[0])
    parser.add_argument("--tile", type=positive_int, nargs=2, metavar=("H", "W"),
                        help=f"slide mode: the window (the output tile for a valid-padding model; default "
                             f"{DEFAULT_TILE[0]} {DEFAULT_TILE[1]})")
    parser.add_argument("--stride", type=positive_int, nargs=2, metavar=("H", "W"),
                        help="slide mode: window spacing (default two thirds of the tile; not for valid padding)")
    parser.add_argument("--tta", action="store_true", help=f"average scales {TTA_SCALES} and horizontal flips")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (the run's crf parameters)")
    parser.add_argument("--stats", action="store_true", help="write stats.csv: pixels of each class per image")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace masks and overlays an earlier run left in --out (stats.csv keeps its rows)")
    parser.add_argument("--device", default="cpu")
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.fileio import check_output_dir
    from pixelwise.infer.files import FilePredictor, expand_inputs, output_stems
    from pixelwise.infer.segmenter import Segmenter

    out = check_output_dir(args.out, "--out")
    if not 0 <= args.opacity <= 1:
        raise ValueError(f"--opacity must be between 0 and 1, got {args.opacity}")
    if args.mode != "slide" and (args.tile or args.stride):
        raise ValueError("--tile and --stride shape sliding windows: add --mode slide, or drop them")
    segmenter = Segmenter(
        args.checkpoint, device=args.device, precision=args.precision, backend=args.backend, mode=args.mode,
        tile=tuple(args.tile or DEFAULT_TILE),
        stride=tuple(args.stride) if args.stride else None, scales=TTA_SCALES if args.tta else (1.0,),
        flip=args.tta, crf=args.crf,
    )
    files, failures = expand_inputs(args.inputs)
    stems = output_stems(files)
    out.mkdir(parents=True, exist_ok=True)
    predictor = FilePredictor(segmenter, out, args.overlay, args.opacity, args.stats, args.overwrite)
    predictor.check(files, stems)  # before any work: nothing of an earlier run, nor any input, is replaced
    done = 0
    for path in tqdm(files, desc="predict", unit="file"):
        try:
            predictor.file(path, stems[path])
            done += 1
        except Exception as error:  # report any unreadable file and go on with the rest
            failures.append((str(path), str(error)))
            tqdm.write(f"failed: {path}: {error}")
    print(f"predict: {done} done, {len(failures)} failed, outputs in {out}")
    for item, reason in failures:
        print(f"  failed: {item}: {reason}")
    return 1 if failures else 0
