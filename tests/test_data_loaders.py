"""Every file-based loader: small files written in its layout, read back; bad data; the real sets if present."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from pixelwise.data import DATASETS, DataError, build_dataset
from pixelwise.data.base import voc_palette

H, W = 6, 8


def shared_data(name: str) -> Path:
    root = Path(os.environ.get("PIXELWISE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / name).is_dir():
        pytest.skip(f"real data set {name!r} not found under {root} (set PIXELWISE_DATA to its parent folder)")
    return root / name


def rgb(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, palette: list[list[int]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P")
        image.putpalette([v for color in palette for v in color])
        image.frombytes(array.tobytes())  # putpalette keeps indices; write the raw labels as indices
    image.save(path)
    return path


def assert_item(dataset, index: int, image: np.ndarray, labels: np.ndarray, channels: int = 3, jpeg=False):
    """Item ``index`` is exactly (image, labels); for JPEG files, exactly what PIL decodes from the file."""
    got_image, got_mask = dataset[index]
    if jpeg:
        image = np.array(Image.open(dataset.files[index][0]).convert("RGB"))
    assert isinstance(got_image, tv_tensors.Image) and got_image.dtype == torch.uint8
    assert isinstance(got_mask, tv_tensors.Mask) and got_mask.dtype == torch.int64
    assert got_image.shape == (channels, *labels.shape)
    expected = torch.from_numpy(image).permute(2, 0, 1) if image.ndim == 3 else torch.from_numpy(image)[None]
    assert torch.equal(got_image, expected)
    assert torch.equal(got_mask, torch.from_numpy(labels.astype(np.int64)))


def test_camvid_layout_and_void(tmp_path):
    raw = np.array([[0, 5, 10, 11]] * 3, dtype=np.uint8)
    for split in ("train", "val"):
        save(tmp_path / split / "a.png", rgb(1, 3, 4))
        save(tmp_path / f"{split}annot" / "a.png", raw)
    dataset = build_dataset("camvid", tmp_path, "val")
    assert dataset.num_classes == 11 and len(dataset.class_names) == 11 and len(dataset.palette) == 11
    assert dataset.files == [(tmp_path / "val" / "a.png", tmp_path / "valannot" / "a.png")]
    assert_item(dataset, 0, rgb(1, 3, 4), np.where(raw == 11, 255, raw))


def test_camvid_jpeg_images_pair_with_png_label_maps(tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(rgb(1, 3, 4)).save(tmp_path / "train" / "b.jpg", quality=100)
    save(tmp_path / "trainannot" / "b.png", np.full((3, 4), 3, dtype=np.uint8))
    dataset = build_dataset("camvid", tmp_path, "train")
    assert dataset.files == [(tmp_path / "train" / "b.jpg", tmp_path / "trainannot" / "b.png")]
    image, mask = dataset[0]
    assert image.shape == (3, 3, 4) and mask.tolist() == [[3] * 4] * 3


def test_isbi2012_splits_and_grayscale(tmp_path):
    for index in range(5):
        save(tmp_path / "images" / f"{index}.png", rgb(index)[..., 0])
        save(tmp_path / "labels" / f"{index}.png", np.where(rgb(index)[..., 1] > 128, 255, 0).astype(np.uint8))
    dataset = build_dataset("isbi2012", tmp_path, "train", train_slices=[0, 1, 2], val_slices=[3, 4])
    assert len(dataset) == 3 and dataset.in_channels == 1 and dataset.num_classes == 2
    val = build_dataset("isbi2012", tmp_path, "val", train_slices=[0, 1, 2], val_slices=[3, 4])
    assert [image.name for image, _ in val.files] == ["3.png", "4.png"]
    assert len(build_dataset("isbi2012", tmp_path, "all")) == 5
    assert_item(dataset, 1, rgb(1)[..., 0], (rgb(1)[..., 1] > 128).astype(np.int64), channels=1)
    with pytest.raises(ValueError, match="overlap"):
        build_dataset("isbi2012", tmp_path, "train", train_slices=[0, 1], val_slices=[1])


def test_folder_index_masks_by_stem(tmp_path):
    save(tmp_path / "train" / "images" / "x.jpg", rgb(2))
    save(tmp_path / "train" / "images" / "y.png", rgb(3))
    labels = np.random.default_rng(0).integers(0, 3, (H, W)).astype(np.uint8)
    labels[0, 0] = 9  # this data set's void value
    save(tmp_path / "train" / "masks" / "x.png", labels)
    save(tmp_path / "train" / "masks" / "y.png", labels)
    dataset = build_dataset("folder", tmp_path, "train", num_classes=3, ignore_value=9)
    assert dataset.class_names == ["class_0", "class_1", "class_2"] and len(dataset.palette) == 3
    assert_item(dataset, 0, rgb(2), np.where(labels == 9, 255, labels), jpeg=True)
    assert_item(dataset, 1, rgb(3), np.where(labels == 9, 255, labels))
    with pytest.raises(ValueError, match="num_classes"):
        build_dataset("folder", tmp_path, "train")
    with pytest.raises(DataError, match="folder not found"):
        build_dataset("folder", tmp_path, "val", num_classes=3)
    save(tmp_path / "train" / "images" / "x.png", rgb(2))
    with pytest.raises(ValueError, match="two files share the stem 'x': x.jpg and x.png"):
        build_dataset("folder", tmp_path, "train", num_classes=3)


def test_folder_rgb_masks_with_palette(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    labels = np.random.default_rng(1).integers(0, 3, (H, W))
    colours = np.asarray(palette, dtype=np.uint8)[labels]
    colours[1, 1] = [9, 9, 9]
    save(tmp_path / "images" / "a.png", rgb(4))
    save(tmp_path / "masks" / "a.png", colours)
    dataset = build_dataset("folder", tmp_path, "all", palette=palette, ignore_color=[9, 9, 9],
                            class_names=["bg", "red", "blue"])
    expected = labels.copy()
    expected[1, 1] = 255
    assert_item(dataset, 0, rgb(4), expected)
    unknown = build_dataset("folder", tmp_path, "all", palette=palette)
    with pytest.raises(DataError, match=r"a\.png: colour \[9, 9, 9\] is not in the palette") as error:
        unknown[0]
    assert error.value.kind == "bad_labels"


def test_voc_palette_pngs_and_border(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    labels = np.array([[0, 1, 255, 20]] * 2, dtype=np.uint8)
    save(root / "JPEGImages" / "2007_000032.jpg", rgb(5, 2, 4))
    save(root / "SegmentationClass" / "2007_000032.png", labels, palette=voc_palette(256))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    dataset = build_dataset("voc", tmp_path, "val")  # found below VOCdevkit/VOC2012
    assert dataset.num_classes == 21 and dataset.palette[1] == [128, 0, 0] and dataset.palette[15] == [192, 128, 128]
    assert Image.open(dataset.files[0][1]).mode == "P"
    assert_item(dataset, 0, rgb(5, 2, 4), labels, jpeg=True)
    with pytest.raises(DataError, match="split list not found"):
        build_dataset("voc", root, "train")


def test_voc_aug_reads_sbd_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="voc_aug needs scipy")
    root = tmp_path / "dataset"
    labels = np.array([[0, 3, 20], [15, 15, 0]], dtype=np.uint8)
    save(root / "img" / "2008_000002.jpg", rgb(6, 2, 3))
    (root / "cls").mkdir()
    scipy_io.savemat(root / "cls" / "2008_000002.mat",
                     {"GTcls": {"Segmentation": labels, "CategoriesPresent": np.array([3, 15, 20])}})
    (root / "train.txt").write_text("2008_000002\n")
    dataset = build_dataset("voc_aug", tmp_path, "train")
    assert dataset.class_names == DATASETS["voc"].class_names
    assert_item(dataset, 0, rgb(6, 2, 3), labels, jpeg=True)
    (root / "cls" / "2008_000002.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="2008_000002.mat: cannot read") as error:
        dataset[0]
    assert error.value.kind == "unreadable"


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    raw = np.array([[7, 8, 26, 33], [0, 1, 34, 255]], dtype=np.uint8)
    for split in ("train", "val"):
        save(tmp_path / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png", rgb(7, 2, 4))
        save(tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", raw)
    dataset = build_dataset("cityscapes", tmp_path, "val")
    assert dataset.num_classes == 19 and dataset.class_names[13] == "car"
    expected = np.array([[0, 1, 13, 18], [255, 255, 255, 255]])
    assert_item(dataset, 0, rgb(7, 2, 4), expected)


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path):
    raw = np.array([[0, 1, 150], [2, 0, 75]], dtype=np.uint8)
    save(tmp_path / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000001.jpg", rgb(8, 2, 3))
    save(tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png", raw)
    dataset = build_dataset("ade20k", tmp_path, "val")
    assert dataset.num_classes == 150 and len(dataset.class_names) == 150 and len(dataset.palette) == 150
    assert_item(dataset, 0, rgb(8, 2, 3), np.array([[255, 0, 149], [1, 255, 74]]), jpeg=True)
    save(tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png",
         np.array([[151, 0]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"mask values \[151\]"):
        dataset[0]


def test_bad_data_errors_name_file_and_problem(tmp_path):
    images, masks = tmp_path / "train", tmp_path / "trainannot"
    save(images / "good.png", rgb(0))
    save(masks / "good.png", np.zeros((H, W), np.uint8))
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    save(masks / "corrupt.png", np.zeros((H, W), np.uint8))
    save(images / "small.png", rgb(0))
    save(masks / "small.png", np.zeros((H + 1, W), np.uint8))
    save(images / "labels.png", rgb(0))
    save(masks / "labels.png", np.full((H, W), 42, np.uint8))
    save(images / "orphan.png", rgb(0))

    with pytest.raises(DataError, match=r"1 mask file\(s\) missing: .*orphan\.png") as error:
        build_dataset("camvid", tmp_path, "train")
    assert error.value.kind == "missing_mask"
    dataset = build_dataset("camvid", tmp_path, "train", verify_files=False)
    by_name = {image.name: index for index, (image, _) in enumerate(dataset.files)}
    expectations = {
        "corrupt.png": ("unreadable", r"corrupt\.png: cannot read image"),
        "small.png": ("size_mismatch", r"small\.png: mask size 8x7 \(WxH\) differs from image small\.png size 8x6"),
        "labels.png": ("bad_labels", r"labels\.png: mask values \[42\] are not labels"),
        "orphan.png": ("missing_mask", r"orphan\.png: mask file is missing"),
    }
    for name, (kind, message) in expectations.items():
        with pytest.raises(DataError, match=message) as error:
            dataset[by_name[name]]
        assert error.value.kind == kind and error.value.path.endswith(name)
    assert dataset[by_name["good.png"]][1].sum() == 0

    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="the split has no images") as error:
        build_dataset("camvid", tmp_path, "val")
    assert error.value.kind == "empty_split" and isinstance(error.value, ValueError)
    with pytest.raises(KeyError, match="unknown data set 'nope'"):
        build_dataset("nope", tmp_path, "train")


def test_every_loader_exposes_the_contract():
    for name, loader in DATASETS.items():
        if name in ("folder", "synthetic"):
            continue  # set per instance
        assert len(loader.class_names) == loader.num_classes == len(loader.palette), name
        assert loader.ignore_index == 255 and loader.in_channels in (1, 3)


def test_real_camvid():
    root = shared_data("camvid")
    train, val = build_dataset("camvid", root, "train"), build_dataset("camvid", root, "val")
    assert (len(train), len(val)) == (367, 101)
    image, mask = val[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    assert set(mask.unique().tolist()) <= set(range(11)) | {255} and (mask == 255).any()


def test_real_isbi2012():
    root = shared_data("isbi2012")
    train, val = build_dataset("isbi2012", root, "train"), build_dataset("isbi2012", root, "val")
    assert (len(train), len(val), len(build_dataset("isbi2012", root, "all"))) == (20, 4, 24)
    image, mask = val[0]
    assert image.shape == (1, 512, 512) and mask.shape == (512, 512)
    assert 0.6 < mask.float().mean() < 0.9  # about 78% of pixels are cell (label 1)


def test_voc_aug_without_scipy_says_so(tmp_path, monkeypatch):
    root = tmp_path / "dataset"
    save(root / "img" / "a.jpg", rgb(9))
    (root / "cls").mkdir()
    (root / "cls" / "a.mat").write_bytes(b"")
    (root / "train.txt").write_text("a\n")
    dataset = build_dataset("voc_aug", root, "train")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes "from scipy.io import ..." fail
    with pytest.raises(ImportError, match="pip install scipy"):
        dataset[0]
