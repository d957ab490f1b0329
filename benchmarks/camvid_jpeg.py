"""Make the CamVid copy that travels to a GPU machine (a 64 MiB limit): images as JPEG quality 95.

    .venv/bin/python benchmarks/camvid_jpeg.py [--source ../shared/data/camvid] [--out .camvid_jpeg]

Train and val only; label maps are copied untouched (lossless PNG). pixelwise's CamVid loader reads either.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data/camvid"))
    parser.add_argument("--out", type=Path, default=Path(".camvid_jpeg"))
    args = parser.parse_args()
    for split in ("train", "val"):
        (args.out / split).mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.source / f"{split}annot", args.out / f"{split}annot", dirs_exist_ok=True)
        for path in sorted((args.source / split).glob("*.png")):
            Image.open(path).convert("RGB").save(args.out / split / f"{path.stem}.jpg", quality=95)
    print(f"{args.out}: {sum(f.stat().st_size for f in args.out.rglob('*') if f.is_file()) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
