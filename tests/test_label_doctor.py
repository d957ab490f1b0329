"""The label doctor: each broken mask layout users make, written to disk, diagnosed with its counts, files and
fix; the folder set's label_map / reduce_zero_label; the trainer's refusal before the first step."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import DataError, build_dataset, check_dataset, check_splits, format_report
from pixelwise.train import config_from_dict, train
from tests.test_data_loaders import rgb, save


def write_split(root: Path, split: str, masks: dict[str, np.ndarray], suffix: str = ".png") -> None:
    """Images (random RGB of each mask's size) and ``masks`` under ``root/split/{images,masks}``."""
    for index, (stem, mask) in enumerate(masks.items()):
        save(root / split / "images" / f"{stem}.png", rgb(index, *mask.shape[:2]))
        save(root / split / "masks" / f"{stem}{suffix}", mask)


def disc_mask(seed: int, foreground: int = 255, size: int = 12) -> np.ndarray:
    """A 0/``foreground`` mask: a filled square at a seeded position."""
    mask = np.zeros((size, size), np.uint8)
    top, left = np.random.default_rng(seed).integers(0, size // 2, 2)
    mask[top:top + size // 2, left:left + size // 2] = foreground
    return mask


def kinds(report) -> list[str]:
    return [finding.kind for finding in report.findings]


def test_issue_binary_masks_stored_as_0_255(tmp_path, capsys):
    # The issue's scenario: binary masks saved as 0/255 checked with three classes reported "problems: none".
    masks = {f"m{seed}": disc_mask(seed) for seed in range(3)}
    write_split(tmp_path, "train", masks)
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    assert not report.ok and not report.problems
    assert kinds(report) == ["binary_255", "absent_classes"]
    binary, absent = report.findings
    foreground = sum(int((mask == 255).sum()) for mask in masks.values())
    assert "3 of 3 masks hold only the values 0 and 255" in binary.message
    assert f"Their {foreground} foreground pixels are ignored" in binary.message
    assert "label_map: {255: 1} with num_classes: 2" in binary.suggestion
    assert "label_map: {255: ignore}" in binary.suggestion
    assert sorted(Path(path).name for path in binary.files) == ["m0.png", "m1.png", "m2.png"]
    assert "2 of 3 classes never occur" in absent.message and "1 (class_1), 2 (class_2)" in absent.message
    assert report.ignore_pixels == foreground and report.class_pixels == [3 * 144 - foreground, 0, 0]

    assert main(["check-data", f"folder:{tmp_path}", "--classes", "3"]) == 1
    out = capsys.readouterr().out
    assert "problems: none" not in out and "problems: 2 in the labels" in out
    assert "files (3): m0.png, m1.png, m2.png" in out

    # The suggested fix: 255 is the foreground of two classes. Pixels counted independently of the loader.
    assert main(["check-data", f"folder:{tmp_path}", "--classes", "2", "--option", "label_map={255: 1}"]) == 0
    fixed = check_dataset("folder", tmp_path, "train", num_classes=2, label_map={255: 1})
    assert fixed.ok and fixed.findings == [] and fixed.class_pixels == [3 * 144 - foreground, foreground]
    # Saying that 255 means ignore silences the 0/255 diagnosis (one class left: nothing absent).
    meant = check_dataset("folder", tmp_path, "train", num_classes=1, label_map={255: "ignore"})
    assert meant.ok and meant.findings == []


def test_some_binary_masks_among_index_masks_are_a_note(tmp_path):
    write_split(tmp_path, "train", {"binary": disc_mask(0), "index": np.arange(12, dtype=np.uint8).reshape(3, 4) % 3})
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    assert report.ok and kinds(report) == ["binary_255"] and not report.findings[0].blocking
    assert "1 of 2 masks" in report.findings[0].message and report.findings[0].files[0].endswith("binary.png")


def test_rgb_masks_where_index_masks_were_expected(tmp_path, capsys):
    palette = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]
    labels = {"a": np.array([[0, 1, 1, 2]] * 3), "b": np.array([[0, 0, 0, 1]] * 3)}
    write_split(tmp_path, "train", {stem: np.asarray(palette, np.uint8)[label] for stem, label in labels.items()})
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    assert report.problem_counts == {"color_mask": 2}
    (finding,) = report.findings
    assert finding.kind == "color_masks" and finding.blocking
    # Each colour's share of all mask pixels, counted from the label arrays the masks were drawn from.
    all_labels = np.concatenate([label.ravel() for label in labels.values()])
    shares = {tuple(palette[label]): np.mean(all_labels == label) for label in range(3)}
    assert "2 masks are colour (RGB) images" in finding.message and "3 distinct colours found" in finding.message
    for color, share in shares.items():
        assert f"{list(color)} {share:.1%}" in finding.message
    assert f"palette: {sorted(palette)}" in finding.suggestion
    assert sorted(Path(path).name for path in finding.files) == ["a.png", "b.png"]
    # The suggested palette reads the masks back as the labels they were drawn from.
    dataset = build_dataset("folder", tmp_path, "train", palette=palette)
    assert np.array_equal(dataset[0][1].numpy(), labels["a"])
    assert check_dataset("folder", tmp_path, "train", palette=palette).ok

    assert main(["check-data", f"folder:{tmp_path}", "--classes", "3"]) == 1
    assert "color_mask 2" in capsys.readouterr().out


def test_gray_rgb_masks_are_index_masks_saved_as_rgb(tmp_path):
    write_split(tmp_path, "train", {"a": np.repeat((np.arange(12).reshape(3, 4) % 2 * 1).astype(np.uint8)[..., None],
                                                   3, axis=2)})
    (finding,) = check_dataset("folder", tmp_path, "train", num_classes=2).findings
    assert finding.kind == "color_masks" and "gray levels" in finding.suggestion


def test_palette_pngs_are_read_as_indices(tmp_path):
    labels = np.array([[0, 1, 2, 255]] * 3, np.uint8)
    colours = [[128, 0, 0], [0, 128, 0], [0, 0, 128]] + [[0, 0, 0]] * 252 + [[224, 224, 192]]
    save(tmp_path / "train" / "images" / "a.png", rgb(0, 3, 4))
    save(tmp_path / "train" / "masks" / "a.png", labels, palette=colours)
    assert Image.open(tmp_path / "train" / "masks" / "a.png").mode == "P"
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    assert report.ok and report.findings == [] and report.class_pixels == [3, 3, 3]
    assert np.array_equal(build_dataset("folder", tmp_path, "train", num_classes=3)[0][1].numpy(), labels)


def test_one_bit_masks_are_read_as_0_and_1(tmp_path):
    mask = disc_mask(1, foreground=1).astype(bool)
    save(tmp_path / "images" / "a.png", rgb(0, 12, 12))
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode == "1"
    assert np.array_equal(build_dataset("folder", tmp_path, "all", num_classes=2)[0][1].numpy(), mask)


def test_jpeg_compressed_masks(tmp_path):
    masks = {f"j{seed}": disc_mask(seed, size=32) for seed in range(2)}
    write_split(tmp_path, "train", masks, suffix=".jpg")
    write_split(tmp_path, "train", {"clean": disc_mask(5, size=32)})
    decoded = {stem: np.asarray(Image.open(tmp_path / "train" / "masks" / f"{stem}.jpg")) for stem in masks}
    between = np.concatenate([mask[(mask > 1) & (mask < 255)] for mask in decoded.values()])
    assert between.size  # the premise: JPEG left values between the labels
    report = check_dataset("folder", tmp_path, "train", num_classes=2, label_map={255: 1})
    assert report.problem_counts == {"bad_labels": 2}
    (finding,) = report.findings
    assert finding.kind == "jpeg_artefacts" and finding.blocking
    assert f"2 masks hold values between the labels (0..1) and 255: {between.size} pixels, " \
           f"{len(np.unique(between))} distinct values" in finding.message
    assert "(2 of the masks are JPEG files)" in finding.message and "losslessly (PNG)" in finding.suggestion
    assert sorted(Path(path).name for path in finding.files) == ["j0.jpg", "j1.jpg"]


def test_jpeg_masks_whose_values_stay_labels_are_named(tmp_path):
    """Index masks 0/1/2 through JPEG, read with 10 classes: every value the compression makes is some label,
    so only the file type tells."""
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 4:20], mask[20:30, 10:30] = 1, 2
    write_split(tmp_path, "train", {"a": mask, "b": mask[::-1].copy()}, suffix=".jpg")
    report = check_dataset("folder", tmp_path, "train", num_classes=10)
    assert "bad_labels" not in report.problem_counts  # the premise: no value left the labels
    note = next(finding for finding in report.findings if finding.kind == "jpeg_masks")
    assert not note.blocking and note.message.startswith("2 masks are JPEG files")
    assert "losslessly (PNG)" in note.suggestion
    assert sorted(Path(path).name for path in note.files) == ["a.jpg", "b.jpg"]


def test_sixteen_bit_values_get_a_label_map(tmp_path):
    mask = np.zeros((8, 8), np.uint16)
    mask[:4], mask[6:] = 1000, 65535
    write_split(tmp_path, "train", {"a": mask})
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    finding = next(finding for finding in report.findings if finding.kind == "values_above_classes")
    assert "values above 255" in finding.message and "48 pixels, values 1000, 65535" in finding.message
    assert "label_map: {1000: 1, 65535: 2}" in finding.suggestion
    fixed = check_dataset("folder", tmp_path, "train", num_classes=3, label_map={1000: 1, 65535: 2})
    assert not [finding for finding in fixed.findings if finding.blocking]


def test_values_above_the_classes_suggest_num_classes(tmp_path):
    write_split(tmp_path, "train", {"a": np.array([[0, 1, 2, 3, 4]] * 2, np.uint8)})
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    (finding,) = report.findings
    assert finding.kind == "values_above_classes" and "4 pixels, 2 distinct values (3, 4)" in finding.message
    assert "set num_classes to 5" in finding.suggestion and "label_map: {3: ignore}" in finding.suggestion


def test_absent_classes_and_classes_only_in_val(tmp_path, capsys):
    write_split(tmp_path, "train", {"t0": np.array([[0, 1, 1]], np.uint8), "t1": np.array([[1, 0, 0]], np.uint8)})
    write_split(tmp_path, "val", {"v0": np.array([[0, 2, 2]], np.uint8), "v1": np.array([[2, 1, 0]], np.uint8),
                                  "v2": np.array([[0, 0, 1]], np.uint8)})
    train_report, val_report = check_splits("folder", tmp_path, ["train", "val"], num_classes=3)
    assert kinds(train_report) == ["absent_classes"]
    assert "1 of 3 classes never occur in the 2 readable masks of split 'train': 2 (class_2)" \
        in train_report.findings[0].message
    assert kinds(val_report) == ["unseen_classes"]
    assert "classes in split 'val' but never in 'train': 2 (class_2: 3 pixels in 2 images)" \
        in val_report.findings[0].message
    # The largest label found is below num_classes - 1: the count may be wrong.
    report = check_dataset("folder", tmp_path, "train", num_classes=4)
    assert "is num_classes 4 meant to be 2, or do the other classes occur only in other splits?" \
        in report.findings[0].suggestion

    assert main(["check-data", f"folder:{tmp_path}", "--classes", "3", "--split", "train", "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "split train: 2 items" in out and "split val: 3 items" in out and "never in 'train'" in out


def test_label_zero_majority_suggests_reduce_zero_label(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[0, :3], mask[1, :3] = 1, 2  # label 0 covers 10 of 16 pixels
    write_split(tmp_path, "train", {"a": mask})
    report = check_dataset("folder", tmp_path, "train", num_classes=3)
    assert report.ok and kinds(report) == ["zero_majority"] and not report.findings[0].blocking
    assert "label 0 (class_0) covers 62.5% of the labelled pixels" in report.findings[0].message
    assert "reduce_zero_label: true" in report.findings[0].suggestion
    assert "0 becomes ignore (255), every other value v the label v - 1" in report.findings[0].suggestion
    assert "note: label 0" in format_report(report)
    reduced = check_dataset("folder", tmp_path, "train", num_classes=2, reduce_zero_label=True)
    assert reduced.ok and reduced.findings == [] and reduced.class_pixels == [3, 3]


def mmseg_reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """MMSegmentation's LoadAnnotations rule, written as it is there."""
    labels = raw.astype(np.uint8).copy()
    labels[labels == 0] = 255
    labels = labels - 1
    labels[labels == 254] = 255
    return labels.astype(np.int64)


def test_reduce_zero_label_is_mmsegmentations(tmp_path):
    raw = np.array([[0, 1, 2, 3], [255, 3, 0, 1]], np.uint8)
    write_split(tmp_path, "train", {"a": raw})
    dataset = build_dataset("folder", tmp_path, "train", num_classes=3, reduce_zero_label=True)
    assert np.array_equal(dataset[0][1].numpy(), mmseg_reduce_zero_label(raw))
    with pytest.raises(DataError, match=r"mask values \[4\] are not labels"):  # 4 - 1 is no class of 3
        write_split(tmp_path, "bad", {"a": raw + (raw == 3)})
        build_dataset("folder", tmp_path, "bad", num_classes=3, reduce_zero_label=True)[0]


def test_label_map(tmp_path):
    raw = np.array([[0, 255, 7, 1]], np.uint8)
    write_split(tmp_path, "train", {"a": raw})
    dataset = build_dataset("folder", tmp_path, "train", num_classes=2, label_map={255: 1, 7: "ignore", 1: 0})
    assert dataset[0][1].tolist() == [[0, 1, 255, 0]]
    # An entry wins over reduce_zero_label for its value.
    reduced = build_dataset("folder", tmp_path, "train", num_classes=2, reduce_zero_label=True, label_map={0: 1,
                                                                                                         7: 255})
    assert reduced[0][1].tolist() == [[1, 255, 255, 0]]
    with pytest.raises(ValueError, match=r"folder label_map: 255: 2 is not a label \(0..1\) or 'ignore'"):
        build_dataset("folder", tmp_path, "train", num_classes=2, label_map={255: 2})
    with pytest.raises(ValueError, match=r"folder label_map: key '255' is not a mask value"):
        build_dataset("folder", tmp_path, "train", num_classes=2, label_map={"255": 1})
    with pytest.raises(ValueError, match="apply to index masks"):
        build_dataset("folder", tmp_path, "train", palette=[[0, 0, 0], [9, 9, 9]], reduce_zero_label=True)


TRAIN = {
    "name": "doctor",
    "model": {"name": "unet", "options": {"base_channels": 4, "depth": 1}},
    "data": {"name": "folder", "val_split": "train", "scale_range": None, "hflip": False},
    "train": {"steps": 1, "batch_size": 1, "progress": False, "threads": 1},
    "eval": {"plot_images": 0},
}


def train_config(root: Path, **options) -> dict:
    return config_from_dict({**TRAIN, "data": {**TRAIN["data"], "root": str(root), "options": options}})


def test_trainer_refuses_label_mistakes_before_the_first_step(tmp_path):
    write_split(tmp_path / "data", "train", {f"m{seed}": disc_mask(seed) for seed in range(2)})
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"data.train_split 'train' of folder:.*: 2 of 2 masks hold only the values "
                       r"0 and 255.*label_map: \{255: 1\}.*\(and 1 more\).*data.check_labels: false") as error:
        train(train_config(tmp_path / "data", num_classes=3), run_dir)
    assert "\n" not in str(error.value) and not run_dir.exists()  # one line, nothing written
    # The fix the error names trains; with median-frequency weights from the same pass.
    config = train_config(tmp_path / "data", num_classes=2, label_map={255: 1})
    config.loss.class_weights = "median_frequency"
    assert train(config, run_dir).steps == 1


def test_trainer_names_jpeg_masks_and_can_skip_the_check(tmp_path):
    write_split(tmp_path / "data", "train", {"j": disc_mask(0, size=32)}, suffix=".jpg")
    with pytest.raises(ValueError, match=r"1 masks hold values between the labels .* JPEG"):
        train(train_config(tmp_path / "data", num_classes=2, label_map={255: 1}), tmp_path / "run")
    # Skipped, the same mistake fails later, at the first read of the mask, without the diagnosis.
    config = train_config(tmp_path / "data", num_classes=2, label_map={255: 1})
    config.data.check_labels = False
    with pytest.raises(DataError, match=r"j\.jpg: mask values \[.*\] are not labels"):
        train(config, tmp_path / "run2")


def test_trainer_reads_image_headers_before_the_first_step(tmp_path):
    """An image of another size than its mask, or one whose header is cut off, stops training before it starts."""
    write_split(tmp_path / "data", "train", {"a": disc_mask(0, foreground=1), "b": disc_mask(1, foreground=1)})
    save(tmp_path / "data" / "train" / "images" / "b.png", rgb(0, 20, 16))
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"masks/b.png: mask size 12x12 \(WxH\) differs from image b.png size "
                                         r"16x20.*check-data folder:.* --split train --classes 2`"):
        train(train_config(tmp_path / "data", num_classes=2), run_dir)
    (tmp_path / "data" / "train" / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match=r"images/b.png: cannot read image"):
        train(train_config(tmp_path / "data", num_classes=2), run_dir)
    assert not run_dir.exists()
