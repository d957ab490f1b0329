"""What a user's image becomes on its way to a model: EXIF orientation applied as viewers do (training data kept
as stored, check-data says which grid its masks fit), 4-channel images for 4-channel models, float RGB TIFFs,
and masks that no image pairs with."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

from pixelwise import Segmenter, create_model, save_model
from pixelwise.cli import main
from pixelwise.data import build_dataset, check_dataset, format_report
from pixelwise.data.base import DataError, read_pixels, to_channels
from pixelwise.infer.inputs import to_pixels

ORIENTATION = 0x0112
# ImageNet's RGB statistics, then 0.5 +- 0.5 for the 4th channel: what a 4-channel model's card must hold.
MEAN4, STD4 = (0.485, 0.456, 0.406, 0.5), (0.229, 0.224, 0.225, 0.5)


def save_oriented(path, pixels: np.ndarray, orientation: int, **options) -> None:
    """An image file whose EXIF orientation tag says how viewers turn ``pixels`` (the stored grid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **options)


def random_model(num_classes: int = 3, **options) -> torch.nn.Module:
    """A small U-Net whose labels follow its input closely (large random weights): a wrong pixel shows."""
    torch.manual_seed(0)
    model = create_model("unet", num_classes, base_channels=4, depth=2, **options)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    return save_model(random_model(), tmp_path_factory.mktemp("run3"))


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    return save_model(random_model(in_channels=4), tmp_path_factory.mktemp("run4"))


@pytest.fixture(scope="module")
def rgba() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (14, 18, 4), dtype=np.uint8)


# -- EXIF orientation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    save_oriented(path, stored, orientation)
    with Image.open(path) as image:
        shown = np.asarray(ImageOps.exif_transpose(image))
    assert shown.shape == ((7, 5, 3) if orientation >= 5 else (5, 7, 3))
    for source in (path, str(path), path.read_bytes()):
        np.testing.assert_array_equal(to_pixels(source), shown)
    with Image.open(path) as image:
        np.testing.assert_array_equal(to_pixels(image), shown)
    np.testing.assert_array_equal(read_pixels(path, upright=False), stored)  # what training reads


def test_a_phone_jpeg_is_segmented_as_viewers_show_it(run3, tmp_path):
    """40x100 stored, orientation 6: viewers, predict, serve and the Segmenter all see it 100x40."""
    stored = np.random.default_rng(1).integers(0, 256, (100, 40, 3), dtype=np.uint8)
    path = tmp_path / "phone.jpg"
    save_oriented(path, stored, 6, quality=95)
    with Image.open(path) as image:
        shown = np.asarray(ImageOps.exif_transpose(image))
    assert shown.shape == (40, 100, 3)
    expected = Segmenter(run3).predict(shown)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(Segmenter(run3).predict(path), expected)
    assert main(["predict", str(path), "--checkpoint", str(run3), "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "phone.png")), expected)

    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from pixelwise.serve.app import create_app, decode_image
    from pixelwise.serve.background import serve_in_thread

    np.testing.assert_array_equal(decode_image(path.read_bytes()), shown)
    with serve_in_thread(create_app(Segmenter(run3))) as url:
        response = httpx.post(f"{url}/v1/segment", content=path.read_bytes(),
                              headers={"content-type": "image/jpeg"}, timeout=60)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)


def test_orientation_keeps_sixteen_bits(tmp_path):
    gray16 = np.random.default_rng(3).integers(0, 65536, (5, 7)).astype(np.uint16)
    save_oriented(tmp_path / "gray.png", gray16, 8)
    with Image.open(tmp_path / "gray.png") as image:
        gray_shown = np.asarray(ImageOps.exif_transpose(image))
    assert gray_shown.shape == (7, 5)
    # TIFFs: the orientation tag is part of decoding; Pillow's reading of the 8-bit file is the reference.
    rgb8 = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for bits, pixels in ((8, rgb8), (16, rgb8.astype(np.uint16) * 257)):
        tifffile.imwrite(tmp_path / f"rgb{bits}.tif", pixels, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    with Image.open(tmp_path / "rgb8.tif") as image:
        rgb_shown = np.asarray(image).astype(np.uint16) * 257
    assert rgb_shown.shape == (7, 5, 3)
    for source, shown in ((tmp_path / "rgb16.tif", rgb_shown), (tmp_path / "gray.png", gray_shown)):
        for pixels in (to_pixels(source), to_pixels(source.read_bytes())):
            assert pixels.dtype == np.uint16
            np.testing.assert_array_equal(pixels, shown)
    np.testing.assert_array_equal(read_pixels(tmp_path / "rgb16.tif", upright=False), rgb_shown)


def test_training_reads_the_stored_grid_and_check_data_says_which_grid_the_masks_fit(tmp_path):
    root = tmp_path / "set"
    stored = np.random.default_rng(4).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    cases = {"stored": (6, (8, 12)), "turned": (6, (12, 8)), "flipped": (2, (8, 12)), "other": (8, (5, 5)),
             "plain": (1, (8, 12))}
    for name, (orientation, mask_shape) in cases.items():
        save_oriented(root / "images" / f"{name}.png", stored, orientation)
        save_oriented(root / "masks" / f"{name}.png", np.ones(mask_shape, np.uint8), 1)
    dataset = build_dataset("folder", root, "all", num_classes=2)
    index = [path.stem for path, _ in dataset.files].index("stored")
    np.testing.assert_array_equal(dataset.load_arrays(index)[0], stored)  # not turned: the mask fits it

    report = check_dataset("folder", root, "all", num_classes=2)
    oriented = {finding.files[0].rsplit("/", 1)[-1]: finding for finding in report.findings
                if finding.kind == "exif_orientation"}
    assert all(len(finding.files) == 1 for finding in oriented.values())
    assert sorted(oriented) == ["flipped.png", "other.png", "stored.png", "turned.png"]
    assert "masks have the stored size" in oriented["stored.png"].message and not oriented["stored.png"].blocking
    assert "masks have the turned size" in oriented["turned.png"].message and oriented["turned.png"].blocking
    assert "exif_transpose" in oriented["turned.png"].suggestion
    assert "may fit the stored pixels" in oriented["flipped.png"].message and not oriented["flipped.png"].blocking
    assert "neither the stored nor the turned size" in oriented["other.png"].message
    assert report.problem_counts == {"size_mismatch": 2}  # turned and other, as before
    text = format_report(report)
    assert text.count("1 images carry an EXIF orientation other than 1") == 4 and "files (1): turned.png" in text


# -- 4-channel images and models ----------------------------------------------------------------------------


def four_channel_sources(tmp_path, rgba: np.ndarray) -> dict[str, object]:
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "rgba.tif", rgba)  # RGB + an extra sample: Pillow opens it as RGBA
    tifffile.imwrite(tmp_path / "bands.tif", rgba, photometric="minisblack", planarconfig="contig")  # Pillow cannot
    return {"rgba png": tmp_path / "rgba.png", "rgba tiff": tmp_path / "rgba.tif",
            "4-band tiff": tmp_path / "bands.tif", "array": rgba, "tensor": torch.from_numpy(rgba).permute(2, 0, 1)}


def test_every_input_kind_keeps_its_fourth_channel(tmp_path, rgba):
    for kind, source in four_channel_sources(tmp_path, rgba).items():
        pixels = to_pixels(source)
        assert pixels.shape == (14, 18, 4), kind
        np.testing.assert_array_equal(pixels, rgba, err_msg=kind)
    planar = rgba.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "planar16.tif", np.moveaxis(planar, 2, 0), photometric="rgb", extrasamples=[2],
                     planarconfig="separate")
    np.testing.assert_array_equal(read_pixels(tmp_path / "planar16.tif"), planar)


def test_to_channels_drops_alpha_for_rgb_and_gray_and_refuses_to_invent_it(rgba):
    np.testing.assert_array_equal(to_channels(rgba, 4), rgba)
    np.testing.assert_array_equal(to_channels(rgba, 3), rgba[..., :3])
    np.testing.assert_array_equal(to_channels(rgba, 1), to_channels(rgba[..., :3], 1))
    with pytest.raises(ValueError, match=r"takes 4-channel images but this one has 3 channel\(s\); give it an RGBA"):
        to_channels(rgba[..., :3], 4)


def test_a_four_channel_card_holds_four_normalisation_values(tmp_path):
    model = create_model("unet", 2, in_channels=4, base_channels=4, depth=2)
    assert model.card.normalization.mean == MEAN4 and model.card.normalization.std == STD4
    save_model(model, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["normalization"]
    assert saved["mean"] == list(MEAN4) and saved["std"] == list(STD4)
    # A card saved before with ImageNet's three values is read with four.
    old = {**model.card.to_dict(), "normalization": {"mean": list(MEAN4[:3]), "std": list(STD4[:3])}}
    assert type(model.card).from_dict(old).input_normalization.mean == MEAN4
    assert create_model("unet", 2, base_channels=4, depth=2).card.normalization.mean == MEAN4[:3]


@pytest.mark.parametrize("kind", ["rgba png", "rgba tiff", "4-band tiff", "array", "tensor"])
def test_a_four_channel_model_sees_all_four_channels(run4, tmp_path, rgba, kind):
    source = four_channel_sources(tmp_path, rgba)[kind]
    model = random_model(in_channels=4)
    x = (torch.from_numpy(rgba).permute(2, 0, 1)[None].float() / 255 - torch.tensor(MEAN4).view(4, 1, 1)) \
        / torch.tensor(STD4).view(4, 1, 1)
    with torch.no_grad():
        expected = model(x).softmax(1)[0].numpy()
    np.testing.assert_allclose(Segmenter(run4).predict_proba(source), expected, atol=1e-4)
    opaque = np.concatenate([rgba[..., :3], np.full_like(rgba[..., :1], 255)], axis=-1)
    assert not np.allclose(Segmenter(run4).predict_proba(opaque), expected, atol=1e-2)  # the 4th channel counts


def test_rgb_models_still_get_rgb_and_four_channel_models_refuse_it(run3, run4, tmp_path, rgba):
    expected = Segmenter(run3).predict(rgba[..., :3])
    for kind, source in four_channel_sources(tmp_path, rgba).items():
        np.testing.assert_array_equal(Segmenter(run3).predict(source), expected, err_msg=kind)
    with pytest.raises(ValueError, match="takes 4-channel images but this one has 3"):
        Segmenter(run4).predict(rgba[..., :3])


def test_predict_command_on_an_rgba_png_with_a_four_channel_model(run4, tmp_path, rgba):
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert main(["predict", str(tmp_path / "rgba.png"), "--checkpoint", str(run4), "--out", str(tmp_path / "out")]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "rgba.png"))
    assert mask.shape == (14, 18)
    np.testing.assert_array_equal(mask, Segmenter(run4).predict(rgba))


def test_a_timm_model_with_four_channels_predicts(tmp_path, rgba):
    pytest.importorskip("timm")
    model = create_model("unet", 2, backbone="timm:resnet18", in_channels=4)
    save_model(model, tmp_path)
    segmenter = Segmenter(tmp_path)
    assert segmenter.mean == list(MEAN4) and segmenter.std == list(STD4)
    assert segmenter.predict(rgba).shape == (14, 18)


# -- float RGB TIFFs --------------------------------------------------------------------------------------


def test_float_rgb_tiffs_are_read_from_files_and_bytes(run3, tmp_path):
    pixels = np.random.default_rng(5).random((9, 11, 3)).astype(np.float32)
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")
    with pytest.raises(Image.UnidentifiedImageError):  # why tifffile reads them
        Image.open(path)
    for source in (path, path.read_bytes()):
        read = read_pixels(source)
        assert read.dtype == np.float32
        np.testing.assert_array_equal(read, pixels)
    np.testing.assert_array_equal(Segmenter(run3).predict(path), Segmenter(run3).predict(pixels))
    tifffile.imwrite(tmp_path / "turned.tif", pixels, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    for upright in (True, False):  # as Pillow decodes the TIFFs it can open: turned by their orientation tag
        np.testing.assert_array_equal(read_pixels(tmp_path / "turned.tif", upright=upright), np.rot90(pixels, -1))


def test_float_rgb_tiffs_outside_the_unit_range_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.full((4, 5, 3), 255.0, np.float32), photometric="rgb")
    with pytest.raises(DataError, match=r"float.tif: cannot read image: a TIFF image must hold values in \[0, 1\], "
                                        r"got 255..255"):
        read_pixels(path)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\], got 255..255"):
        read_pixels(path.read_bytes())


# -- masks without an image ---------------------------------------------------------------------------------


def test_check_data_reports_masks_that_no_image_pairs_with(tmp_path, capsys):
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "images" / "a.png")
    for name in ("a", "lonely", "typo"):
        Image.fromarray(np.eye(4, 5, dtype=np.uint8)).save(root / "masks" / f"{name}.png")
    report = check_dataset("folder", root, "all", num_classes=2)
    (finding,) = [finding for finding in report.findings if finding.kind == "unmatched_masks"]
    assert [path.rsplit("/", 1)[-1] for path in finding.files] == ["lonely.png", "typo.png"]
    assert finding.message.startswith("2 mask files have no image of the same stem") and not finding.blocking
    assert report.ok and report.num_items == 1
    assert main(["check-data", f"folder:{root}", "--split", "all", "--classes", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 mask files have no image" in out and "files (2): lonely.png, typo.png" in out
