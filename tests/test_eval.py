"""Evaluation: scores against a direct count, the per-class table, and the ``pixelwise eval`` command."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from pixelwise import create_model, save_model
from pixelwise.card import DataSource
from pixelwise.cli import main
from pixelwise.crf import CRFSettings
from pixelwise.data import build_dataset
from pixelwise.data.transforms import Normalization, build_transforms
from pixelwise.train.evaluate import crf_refiner, evaluate, evaluate_checkpoint, format_table


class FixedPrediction(nn.Module):
    """Ignores its input and predicts the labels it was given, as one-hot logits (N, C, H, W)."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.labels = labels
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = self.labels[self.calls: self.calls + len(x)]
        self.calls += len(x)
        return nn.functional.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()


def test_evaluate_counts_every_pixel_of_every_batch():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (5, 4, 6), generator=generator)
    target[:, 0, 0] = 255
    pred = torch.where(torch.rand(target.shape, generator=generator) < 0.7, target.clamp(max=2),
                       torch.randint(0, 3, target.shape, generator=generator))
    loader = DataLoader(list(zip(torch.zeros(5, 3, 4, 6), target, strict=True)), batch_size=2)
    scores = evaluate(FixedPrediction(pred, 3), loader, num_classes=3).compute()
    labelled = target != 255
    assert scores["pixel_accuracy"] == pytest.approx((pred == target)[labelled].float().mean().item())
    for c in range(3):
        inter = ((pred == c) & (target == c) & labelled).sum().item()
        union = (((pred == c) | (target == c)) & labelled).sum().item()
        assert scores["iou"][c] == pytest.approx(inter / union)


def test_table_has_a_row_per_class_and_the_means():
    scores = {"iou": [0.5, math.nan], "class_accuracy": [0.75, math.nan], "dice": [2 / 3, math.nan],
              "miou": 0.5, "mean_accuracy": 0.75, "mdice": 2 / 3, "pixel_accuracy": 0.8, "fwiou": 0.5}
    lines = format_table(scores, ["road", "sky"]).splitlines()
    assert lines[1].split() == ["road", "50.00", "75.00", "66.67"]
    assert lines[2].split() == ["sky", "-", "-", "-"]
    assert lines[3].split() == ["mean", "50.00", "75.00", "66.67"]
    assert "pixel accuracy 80.00" in lines[4]


MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def save_run(model: nn.Module, run_dir) -> None:
    """A run directory as training leaves it: weights, class names, normalisation and the data set."""
    save_model(model, run_dir, class_names=["bg", "a", "b", "c", "d"], palette=[[0, 0, 0]] * 5,
               normalization=Normalization(MEAN, STD),
               data=DataSource("synthetic", None, {"image_size": 16}, {"num_images": 6}, "val"))


@pytest.fixture
def saved_run(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", 5, base_channels=4, depth=2)
    save_run(model, tmp_path)
    return tmp_path, model, MEAN, STD


def test_eval_command_prints_the_table_and_writes_the_same_scores(saved_run, tmp_path, capsys):
    run_dir, model, mean, std = saved_run
    out = tmp_path / "scores.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--data", "synthetic", "--split", "val",
                 "--json", str(out), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("bg ")
    written = json.loads(out.read_text())
    # Independent run: the run's data options, the checkpoint's normalisation, one image at a time.
    dataset = build_dataset("synthetic", None, "val", build_transforms(False, mean=mean, std=std),
                            image_size=16, num_images=6)
    correct = total = 0
    with torch.no_grad():
        for image, mask in dataset:
            correct += (model.eval()(image[None]).argmax(1)[0] == mask).sum().item()
            total += mask.numel()
    assert written["pixel_accuracy"] == pytest.approx(correct / total)
    assert written["class_names"] == ["bg", "a", "b", "c", "d"]
    # Without --data, the data set the run trained on is used: the same numbers.
    scores, names = evaluate_checkpoint(run_dir)
    assert scores["pixel_accuracy"] == pytest.approx(written["pixel_accuracy"])


def test_eval_test_time_augmentation_averages_the_softmax_of_every_view(saved_run, tmp_path):
    run_dir, model, mean, std = saved_run
    with torch.no_grad():  # large random weights: each view predicts differently (a fresh U-Net is near-constant)
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    save_run(model, run_dir)
    out = tmp_path / "tta.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--flip", "--scales", "1", "0.5",
                 "--json", str(out)]) == 0
    plain = evaluate_checkpoint(run_dir)[0]["pixel_accuracy"]
    dataset = build_dataset("synthetic", None, "val", build_transforms(False, mean=mean, std=std),
                            image_size=16, num_images=6)
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for image, mask in dataset:
            small = nn.functional.interpolate(image[None], size=(8, 8), mode="bilinear", align_corners=False)
            views = [model(image[None]), model(image[None].flip(-1)).flip(-1), model(small),
                     model(small.flip(-1)).flip(-1)]
            probs = sum(nn.functional.interpolate(v, size=(16, 16), mode="bilinear", align_corners=False).softmax(1)
                        for v in views)
            correct += (probs.argmax(1)[0] == mask).sum().item()
            total += mask.numel()
    assert json.loads(out.read_text())["pixel_accuracy"] == pytest.approx(correct / total)
    assert plain != pytest.approx(correct / total)


def test_multi_scale_eval_refuses_a_valid_padding_unet(tmp_path, capsys):
    save_model(create_model("unet", 2, base_channels=4, depth=2, padding="valid"), tmp_path,
               data=DataSource("synthetic"))
    assert main(["eval", "--checkpoint", str(tmp_path), "--scales", "0.5", "1"]) == 2
    assert "multi-scale evaluation needs a same-size model; this one loses a 20-pixel margin" \
        in capsys.readouterr().err


def test_eval_command_reports_an_unknown_data_set(saved_run, capsys):
    run_dir = saved_run[0]
    assert main(["eval", "--checkpoint", str(run_dir), "--data", "nonexistent:/nowhere"]) == 2
    assert "unknown data set 'nonexistent'" in capsys.readouterr().err


def test_crf_hook_sees_the_original_pixels(saved_run, tmp_path):
    from pixelwise.crf import dense_crf

    run_dir, model, mean, std = saved_run
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8, generator=generator)
    normalised, _ = build_transforms(False, mean=mean, std=std)(image, torch.zeros(12, 10, dtype=torch.int64))
    logits = torch.randn(1, 5, 12, 10, generator=generator)
    refined = crf_refiner(Normalization(mean, std), CRFSettings())(normalised[None], logits)
    torch.testing.assert_close(refined.exp(), dense_crf(logits.softmax(1), image[None]), rtol=1e-4, atol=1e-6)

    # eval --crf scores the CRF's labels: the same count by hand, from the raw pixels and pydensecrf's defaults.
    out = tmp_path / "crf.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--crf", "--json", str(out)]) == 0
    normalise = build_transforms(False, mean=mean, std=std)
    correct = total = changed = 0
    with torch.no_grad():
        for image, mask in build_dataset("synthetic", None, "val", image_size=16, num_images=6):
            probs = model.eval()(normalise(image, mask)[0][None]).softmax(1)
            labels = dense_crf(probs, image[None]).argmax(1)[0]
            changed += (labels != probs.argmax(1)[0]).sum().item()
            valid = mask != 255
            correct += (labels == mask)[valid].sum().item()
            total += valid.sum().item()
    assert changed > 0  # the CRF moved some labels, so the score below tells the two apart
    assert json.loads(out.read_text())["pixel_accuracy"] == pytest.approx(correct / total)


def test_eval_and_predict_crf_use_the_runs_crf_section(tmp_path, monkeypatch):
    import importlib

    crf_module = importlib.import_module("pixelwise.crf.dense_crf")
    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, depth=2)
    crf = {"iterations": 2, "gaussian_sxy": 2.0, "gaussian_compat": 1.0, "bilateral_sxy": 49.0,
           "bilateral_srgb": 5.0, "bilateral_compat": 4.0}
    save_model(model, tmp_path / "run", crf=CRFSettings(**crf),
               data=DataSource("synthetic", options={"image_size": 16, "num_classes": 3},
                               val_options={"num_images": 2}))
    seen = []
    real = crf_module.dense_crf

    def recording(probs, image, **kwargs):
        seen.append(kwargs)
        return real(probs, image, **kwargs)

    monkeypatch.setattr(crf_module, "dense_crf", recording)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--crf"]) == 0
    assert seen and all(kwargs == crf for kwargs in seen)
    seen.clear()
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(image), "--out", str(tmp_path / "out"),
                 "--crf"]) == 0
    assert seen and all(kwargs == crf for kwargs in seen)


def test_multi_scale_averaging_refuses_logits_smaller_than_their_input():
    from pixelwise.infer.segmenter import average_views

    def shrinking(view: torch.Tensor) -> torch.Tensor:
        return torch.zeros(view.shape[0], 2, view.shape[-2] - 4, view.shape[-1] - 4)

    with pytest.raises(ValueError, match="the size of their input"):
        average_views(shrinking, torch.zeros(1, 1, 16, 16), scales=(1.0, 0.5))
