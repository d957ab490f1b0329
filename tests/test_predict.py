"""``pixelwise predict``: masks in the palette, overlays, stats, folders/globs/videos, failures reported."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import Segmenter, create_model, save_model
from pixelwise.cli import main
from pixelwise.infer.writers import mask_image

CLASSES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, depth=2)
    directory = tmp_path_factory.mktemp("run")
    save_model(model, directory, class_names=CLASSES, palette=PALETTE)
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (24, 32)), ("b.jpg", (20, 18))]:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_masks_are_indexed_pngs_with_the_palette(run_dir, images, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run_dir), str(images), "--out", str(out), "--overlay",
                 "--stats"]) == 0
    segmenter = Segmenter(run_dir)
    for stem, suffix in [("a", ".png"), ("b", ".jpg")]:
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P"
        assert mask.getpalette()[:9] == [c for colour in PALETTE for c in colour]
        np.testing.assert_array_equal(np.asarray(mask), segmenter.predict(images / f"{stem}{suffix}"))
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.width > mask.width  # image plus the legend strip
    with open(out / "stats.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "width", "height", *CLASSES]
    assert [row[0] for row in rows[1:]] == [str(images / "a.png"), str(images / "b.jpg")]
    for row in rows[1:]:
        width, height, *areas = map(int, row[1:])
        assert sum(areas) == width * height
    labels_a = segmenter.predict(images / "a.png")
    assert [int(v) for v in rows[1][3:]] == np.bincount(labels_a.ravel(), minlength=3).tolist()


def test_overlay_blends_the_palette_colours():
    from pixelwise.infer.writers import overlay

    pixels = np.full((2, 2, 3), 200, np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    blended = overlay(pixels, labels, PALETTE, opacity=0.25)
    np.testing.assert_array_equal(blended[0, 1], np.round(0.75 * 200 + 0.25 * np.array(PALETTE[1])))


def test_glob_and_unreadable_files_are_reported_and_skipped(run_dir, images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(run_dir), str(images / "*.png"), str(broken),
                 str(tmp_path / "missing.png"), str(tmp_path / "nothing*.png"), "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    assert "1 done, 3 failed" in captured.out
    assert "broken.png" in captured.out and "missing.png" in captured.out and "nothing*.png" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_slide_and_tta_options_reach_the_segmenter(run_dir, images, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run_dir), str(images / "a.png"), "--out", str(out), "--mode",
                 "slide", "--tile", "16", "16", "--stride", "8", "8", "--tta"]) == 0
    expected = Segmenter(run_dir, mode="slide", tile=(16, 16), stride=(8, 8), scales=(0.75, 1.0, 1.25),
                         flip=True).predict(images / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), expected)


def test_video_gives_a_video_of_overlays(run_dir, tmp_path):
    imageio = pytest.importorskip("imageio.v2", reason="imageio is needed for video")
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is needed for video")
    video = tmp_path / "clip.mp4"
    writer = imageio.get_writer(video, fps=4, macro_block_size=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.append_data(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    writer.close()
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run_dir), str(video), "--out", str(out), "--stats"]) == 0
    reader = imageio.get_reader(out / "clip_overlay.mp4")
    frames = [np.asarray(frame) for frame in reader]
    reader.close()
    assert len(frames) == 3
    # The 24 x 32 frame plus a 170-pixel legend strip; three legend rows (62 pixels) set the height.
    assert frames[0].shape == (62, 32 + 170, 3)
    with open(out / "stats.csv") as handle:
        assert [row[0] for row in csv.reader(handle)][1:] == [f"{video}#{i}" for i in range(3)]


def test_mask_image_rejects_labels_beyond_a_palette_png():
    with pytest.raises(ValueError, match="255"):
        mask_image(np.array([[300]]), PALETTE)
