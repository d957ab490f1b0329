"""16-bit images are read at their true depth everywhere (predict, serve, Segmenter, data sets, check-data),
and a per-run intensity normalisation, kept in the run card, handles images that do not use the full range."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from pixelwise import Segmenter, create_model, load_model, save_model
from pixelwise.cli import main
from pixelwise.data import build_dataset
from pixelwise.data.base import read_pixels
from pixelwise.data.transforms import Normalization, build_transforms
from pixelwise.train import config_from_dict, train


def write_png16(path, pixels: np.ndarray) -> None:
    """A 16-bit PNG, grayscale (H, W) through Pillow or RGB (H, W, 3) through pypng."""
    if pixels.ndim == 2:
        Image.fromarray(pixels.astype(np.uint16)).save(path)
        return
    import png

    height, width, _ = pixels.shape
    png.from_array(pixels.reshape(height, width * 3).astype(np.uint16), "RGB;16").save(str(path))


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small U-Net whose labels follow its input closely (large random weights), so that a wrong reading
    of the pixels shows in the labels."""
    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, depth=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    directory = tmp_path_factory.mktemp("run")
    save_model(model, directory)
    return directory


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 3)])
def test_sixteen_bit_files_are_read_at_full_depth(tmp_path, suffix, shape):
    pixels = np.random.default_rng(1).integers(0, 65536, shape).astype(np.uint16)
    path = tmp_path / f"image{suffix}"
    if suffix == ".png":
        write_png16(path, pixels)
    else:
        tifffile.imwrite(path, pixels, photometric="rgb" if len(shape) == 3 else "minisblack")
    read = read_pixels(path)
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, pixels)
    np.testing.assert_array_equal(read_pixels(path.read_bytes()), pixels)  # what serve gets: the upload's bytes


def test_predict_and_serve_give_the_8_bit_labels_for_the_16_bit_picture(run, picture, tmp_path):
    httpx = pytest.importorskip("httpx")
    from pixelwise.serve.app import create_app
    from pixelwise.serve.background import serve_in_thread

    Image.fromarray(picture).save(tmp_path / "eight.png")
    write_png16(tmp_path / "sixteen.png", picture.astype(np.uint16) * 257)
    expected = Segmenter(run).predict(picture)
    assert len(np.unique(expected)) > 1
    assert main(["predict", str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png"), "--checkpoint", str(run),
                 "--out", str(tmp_path / "out")]) == 0
    for name in ("eight", "sixteen"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), expected)
    with serve_in_thread(create_app(Segmenter(run))) as url:
        response = httpx.post(f"{url}/v1/segment", content=(tmp_path / "sixteen.png").read_bytes(),
                              headers={"content-type": "image/png"}, timeout=60)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)
    # A saturated read (Pillow's 8-bit view clipped) would differ: the test can tell the two apart.
    clipped = np.clip(picture.astype(np.int64) * 257, 0, 255).astype(np.uint8)
    assert not np.array_equal(Segmenter(run).predict(clipped), expected)


def test_training_sees_the_same_pixels_in_8_and_16_bits(tmp_path, picture):
    for bits, folder in ((8, tmp_path / "eight"), (16, tmp_path / "sixteen")):
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        for index in range(4):
            image = np.roll(picture, 3 * index, axis=1)
            if bits == 8:
                Image.fromarray(image).save(folder / "images" / f"{index}.png")
            else:
                write_png16(folder / "images" / f"{index}.png", image.astype(np.uint16) * 257)
            Image.fromarray((image[..., 0] > 128).astype(np.uint8)).save(folder / "masks" / f"{index}.png")
    transform = build_transforms(False)
    eight = build_dataset("folder", str(tmp_path / "eight"), "all", transform, num_classes=2)
    sixteen = build_dataset("folder", str(tmp_path / "sixteen"), "all", transform, num_classes=2)
    for index in range(4):
        torch.testing.assert_close(sixteen[index][0], eight[index][0], rtol=0, atol=1e-6)
    weights = {}
    for bits in ("eight", "sixteen"):
        recipe = {"model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
                  "data": {"name": "folder", "root": str(tmp_path / bits), "train_split": "all", "val_split": "all",
                           "options": {"num_classes": 2}, "scale_range": None, "hflip": False},
                  "train": {"steps": 2, "batch_size": 2, "progress": False, "threads": 1, "checkpoint_every": 2},
                  "eval": {"every": 2, "plot_images": 0}}
        train(config_from_dict(recipe), tmp_path / f"run-{bits}")
        weights[bits] = load_model(tmp_path / f"run-{bits}").state_dict()
    for key, value in weights["eight"].items():
        torch.testing.assert_close(weights["sixteen"][key], value, rtol=1e-4, atol=1e-5)


def test_intensity_stretch_is_kept_in_the_card_and_repeated_at_inference(run, tmp_path, picture):
    gray = picture[..., 0]
    twelve_bit = gray.astype(np.uint16) * 16  # a 12-bit sensor in a 16-bit file: 0..4080 of 65535
    model = load_model(run)
    save_model(model, tmp_path / "minmax", normalization=Normalization(intensity="minmax"))
    assert load_model(tmp_path / "minmax").card.normalization.intensity == "minmax"
    stretched = Segmenter(tmp_path / "minmax").predict(twelve_bit)
    # By hand: the darkest..brightest of the image to 0..1, then ImageNet's mean/std, then the model.
    low, high = gray.min(), gray.max()
    unit = torch.from_numpy((gray.astype(np.float32) - low) / (high - low))[None, None].expand(1, 3, -1, -1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        expected = model((unit - mean) / std).argmax(1)[0].numpy()
    np.testing.assert_array_equal(stretched, expected)
    # Without the stretch the dim 12-bit image gives other labels: the option matters.
    assert not np.array_equal(Segmenter(run).predict(twelve_bit), expected)
    with pytest.raises(ValueError, match="intensity must be one of none, minmax, percentile"):
        Normalization(intensity="auto")


def test_percentile_stretch_ignores_a_few_hot_pixels():
    image = torch.linspace(0, 0.5, 10_000).view(1, 1, 100, 100).clone()
    image[..., 0, :5] = 1.0  # five saturated pixels
    out = Normalization((0.0,), (1.0,), "percentile").normalize(image)
    assert out.max().item() == 1.0 and out.quantile(0.5).item() == pytest.approx(0.5, abs=0.02)
    minmax = Normalization((0.0,), (1.0,), "minmax").normalize(image)
    assert minmax.quantile(0.5).item() < 0.3  # the hot pixels squeeze the rest into the lower quarter


def test_recipe_intensity_reaches_the_run_card(tmp_path):
    recipe = {"model": {"name": "unet", "options": {"base_channels": 4, "depth": 1}},
              "data": {"name": "synthetic", "options": {"num_images": 2, "image_size": 8}, "intensity": "percentile",
                       "scale_range": None},
              "train": {"steps": 1, "batch_size": 2, "progress": False, "checkpoint_every": 1},
              "eval": {"every": 1, "plot_images": 0}}
    train(config_from_dict(recipe), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["normalization"]["intensity"] == "percentile"
    with pytest.raises(ValueError, match="data.intensity = 'auto' is not one of"):
        config_from_dict({**recipe, "data": {**recipe["data"], "intensity": "auto"}})


def test_check_data_reports_bit_depth_and_value_range(tmp_path, picture, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_png16(tmp_path / "images" / "a.png", picture[..., 0].astype(np.uint16) * 16)
    Image.fromarray(np.eye(20, 24, dtype=np.uint8)).save(tmp_path / "masks" / "a.png")  # both classes occur
    assert main(["check-data", f"folder:{tmp_path}", "--split", "all", "--option", "num_classes=2",
                 "--option", "in_channels=1"]) == 0
    out = capsys.readouterr().out
    low, high = int(picture[..., 0].min()) * 16, int(picture[..., 0].max()) * 16
    assert f"bit depth: 16-bit: 1; pixel values {low}..{high}" in out
    assert "consider data.intensity: percentile" in out


@pytest.mark.parametrize("layout", ["planar", "pages"])
def test_sixteen_bit_tiff_layouts_come_out_channels_last(tmp_path, layout):
    pixels = np.random.default_rng(2).integers(0, 65536, (9, 7, 3)).astype(np.uint16)
    path = tmp_path / "image.tif"
    if layout == "planar":  # channel-first planes
        tifffile.imwrite(path, np.moveaxis(pixels, 2, 0), photometric="rgb", planarconfig="separate")
    else:  # two pages: the first one is read
        tifffile.imwrite(path, np.stack([pixels, pixels // 2]), photometric="rgb")
    np.testing.assert_array_equal(read_pixels(path), pixels)


def test_sixteen_bit_gray_with_alpha_reads_as_gray(tmp_path):
    import png

    gray = np.random.default_rng(3).integers(0, 65536, (6, 5)).astype(np.uint16)
    with_alpha = np.stack([gray, np.full_like(gray, 65535)], axis=-1).reshape(6, 10)
    png.from_array(with_alpha, "LA;16").save(str(tmp_path / "la.png"))
    np.testing.assert_array_equal(read_pixels(tmp_path / "la.png"), gray)


def test_floats_outside_the_unit_range_are_refused_not_clipped(run, picture):
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\], got 0..255"):
        Segmenter(run).predict(picture.astype(np.float32))
    sixteen = torch.from_numpy(picture.astype(np.int32) * 257).to(torch.uint16).permute(2, 0, 1)
    eight = torch.from_numpy(picture).permute(2, 0, 1)
    torch.testing.assert_close(Normalization().normalize(sixteen), Normalization().normalize(eight))
