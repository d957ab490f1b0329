"""The training loop in-process on tiny synthetic data: run directory contents, reload, accumulation, precision."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pixelwise import load_model
from pixelwise.data import build_dataset
from pixelwise.train import config_from_dict, config_to_dict, train
from pixelwise.train.evaluate import evaluate_checkpoint
from pixelwise.train.schedules import lr_factor
from pixelwise.train.state import load_state
from pixelwise.train.trainer import class_weights

TINY = {
    "name": "tiny",
    "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
    "data": {"name": "synthetic", "options": {"num_images": 8, "image_size": 16}, "val_options": {"num_images": 4},
             "scale_range": None, "hflip": False},
    "optim": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0},
    "train": {"steps": 6, "batch_size": 2, "log_every": 2, "checkpoint_every": 3, "progress": False, "threads": 1},
    "eval": {"every": 3, "batch_size": 4, "plot_images": 2},
    "loss": {},
}


def tiny(**sections) -> dict:
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def test_run_directory_holds_loadable_weights_state_metrics_and_plots(tmp_path):
    config = config_from_dict(tiny())
    result = train(config, tmp_path)
    for name in ("config.yaml", "model.safetensors", "config.json", "best/model.safetensors", "metrics.jsonl",
                 "loss.png", "miou.png", "class_iou.png", "examples.png", "state/latest.json"):
        assert (tmp_path / name).is_file(), name
    model = load_model(tmp_path)
    card = model.card
    assert card.class_names == ["background", "disc", "rectangle", "triangle", "ring"]
    assert card.data.name == "synthetic" and card.data.options == config.data.options
    assert list(card.normalization.mean) == config.data.mean and list(card.normalization.std) == config.data.std
    assert card.train_config == config_to_dict(config)
    assert card.step == 6 and card.crf == config.crf and card.precision == config.train.precision
    # The user-facing weights and the resume state are the same step's.
    step, state = load_state(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert step == 6 and all(torch.equal(weights[key], state["model"][key]) for key in weights)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [2, 4, 6]
    assert [row["step"] for row in rows if "miou" in row] == [3, 6]
    assert rows[-1]["miou"] == pytest.approx(result.scores["miou"])
    # The learning rate each logged step used follows the poly schedule.
    assert rows[0]["lr"] == pytest.approx(0.01 * lr_factor(1, 6, config.optim))


def test_training_lowers_the_loss(tmp_path):
    config = config_from_dict(tiny(train={"steps": 40, "log_every": 10, "checkpoint_every": 40},
                                   eval={"every": 40, "plot_images": 0}))
    train(config, tmp_path)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "loss" in line]
    assert losses[-1] < 0.6 * losses[0]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # No batch norm and no augmentation: two batches of 2 then must give the gradient of one batch of 4.
    common = {"steps": 3, "checkpoint_every": 3, "log_every": 3}
    big = config_from_dict(tiny(train={**common, "batch_size": 4}, eval={"every": 3, "plot_images": 0}))
    split = config_from_dict(tiny(train={**common, "batch_size": 2, "accumulate": 2},
                                  eval={"every": 3, "plot_images": 0}))
    train(big, tmp_path / "big")
    train(split, tmp_path / "split")
    first, second = load_file(tmp_path / "big/model.safetensors"), load_file(tmp_path / "split/model.safetensors")
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=1e-5)


def test_bf16_and_channels_last_train_on_cpu(tmp_path):
    settings = {"steps": 2, "checkpoint_every": 2}
    evaluation = {"every": 2, "plot_images": 0}
    train(config_from_dict(tiny(train=settings, eval=evaluation)), tmp_path / "fp32")
    config = config_from_dict(tiny(train={**settings, "precision": "bf16", "channels_last": True}, eval=evaluation))
    result = train(config, tmp_path / "bf16")
    # The same two steps in bf16 and channels-last: the weights follow the fp32 run's. Adam moves a weight by
    # about lr (0.01) a step whatever the gradient's size, so runs that went apart differ by < 2 * 2 * lr.
    fp32, bf16 = load_file(tmp_path / "fp32/model.safetensors"), load_file(tmp_path / "bf16/model.safetensors")
    drift = max((fp32[key] - bf16[key]).abs().max().item() for key in fp32 if fp32[key].is_floating_point())
    assert 0 < drift < 0.04
    # The scores it reports are the saved model's, evaluated again in the run's precision (from its card).
    assert load_model(tmp_path / "bf16").card.precision == "bf16"
    scores, _ = evaluate_checkpoint(tmp_path / "bf16")
    assert scores["miou"] == pytest.approx(result.scores["miou"], abs=1e-6)
    assert scores["pixel_accuracy"] == pytest.approx(result.scores["pixel_accuracy"], abs=1e-6)


def test_median_frequency_class_weights_follow_segnet():
    config = config_from_dict(tiny(loss={"class_weights": "median_frequency"}))
    masks = [mask for _, mask in build_dataset("synthetic", None, "train", num_images=8, image_size=16)]
    # SegNet: freq_c = pixels of c / pixels of the images containing c; weight_c = median(freq) / freq_c.
    frequencies = []
    for c in range(5):
        with_c = [mask for mask in masks if (mask == c).any()]
        frequencies.append(sum((mask == c).sum().item() for mask in with_c) / sum(mask.numel() for mask in with_c))
    ordered = sorted(frequencies)
    median = (ordered[1] + ordered[2]) / 2 if len(ordered) % 2 == 0 else ordered[len(ordered) // 2]
    expected = torch.tensor([median / f for f in frequencies])
    torch.testing.assert_close(class_weights(config, 5), expected.float())


def test_clear_errors_for_fp16_on_cpu_and_wrong_class_weights(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(config_from_dict(tiny(train={"precision": "fp16", "device": "cpu"})), tmp_path / "a")
    with pytest.raises(ValueError, match="class_weights has 2 entries for 5 classes"):
        train(config_from_dict(tiny(loss={"class_weights": [1, 2]})), tmp_path / "b")


def test_quickstart_and_train_commands_end_to_end(tmp_path, capsys):
    from pixelwise.cli import main

    small = ["--set", "train.steps=2", "--set", "data.options.num_images=4", "--set", "data.val_options.num_images=2",
             "--set", "model.options.base_channels=4", "--set", "train.progress=false", "--set", "eval.plot_images=1"]
    assert main(["quickstart", "--out", str(tmp_path / "quick"), *small]) == 0
    printed = capsys.readouterr().out
    assert "model reloaded from" in printed and "\ntriangle " in printed and "\nmean " in printed
    assert (tmp_path / "quick" / "examples.png").is_file()

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(tiny(train={"steps": 2, "checkpoint_every": 2}, eval={"every": 2, "plot_images": 0})))
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--set", "train.seed=5"]) == 0
    assert load_model(tmp_path / "run").card.train_config["train"]["seed"] == 5
    # Starting over an existing run, or resuming with a changed config, is refused with a clear message.
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "train.steps=9"]) == 2
    assert "drop --config, --set and --out" in capsys.readouterr().err
    assert main(["train", "--config", str(recipe), "--set", "train.setps=3"]) == 2
    assert "did you mean 'train.steps'" in capsys.readouterr().err


def test_init_from_starts_a_fine_tuning_phase_from_saved_weights(tmp_path, capsys):
    evaluation = {"every": 3, "plot_images": 0}
    train(config_from_dict(tiny(eval=evaluation)), tmp_path / "phase1")
    source = load_model(tmp_path / "phase1" / "best")
    # A learning rate of ~0 keeps the weights where they started: the saved ones, not a fresh initialisation.
    still = {"optimizer": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}
    phase2 = tiny(model={"init_from": str(tmp_path / "phase1" / "best")}, optim=still, eval=evaluation)
    train(config_from_dict(phase2), tmp_path / "phase2")
    fine_tuned = load_model(tmp_path / "phase2")
    for name, weight in source.named_parameters():
        torch.testing.assert_close(dict(fine_tuned.named_parameters())[name], weight, rtol=0, atol=1e-8)
    # ... which phase 1 moved away from the seed's initialisation, so the check above can tell them apart.
    train(config_from_dict(tiny(optim=still, eval=evaluation)), tmp_path / "fresh")
    assert not torch.equal(load_model(tmp_path / "fresh").head.weight, source.head.weight)

    # A resumed phase takes its weights from its own state: the source may be gone by then.
    (tmp_path / "phase1" / "best" / "model.safetensors").unlink()
    phase2["train"]["steps"] = 9
    assert train(config_from_dict(phase2), tmp_path / "phase2", resume=True).steps == 9

    with pytest.raises(ValueError, match=r"model.init_from: .*phase1.best.model.safetensors: missing"):
        train(config_from_dict(phase2), tmp_path / "c")
    with pytest.raises(ValueError, match=r"model.init_from: .*config.json is a file; give the directory"):
        train(config_from_dict(tiny(model={"init_from": str(tmp_path / "phase1" / "config.json")})), tmp_path / "c")
    start = {"init_from": str(tmp_path / "phase1")}
    refused = {
        "model.options.base_channels 8 .saved 4.": tiny(model={**start, "options": {"base_channels": 8, "depth": 2}}),
        r"classes \['background', 'disc', 'rectangle', 'triangle'\]": tiny(
            model=start, data={"options": {"num_images": 8, "image_size": 16, "num_classes": 4}}),
        r"data.mean \(0.5, 0.5, 0.5\) \(saved \(0.485, 0.456, 0.406\)\)": tiny(
            model=start, data={"mean": [0.5, 0.5, 0.5]}),
    }
    for message, raw in refused.items():
        with pytest.raises(ValueError, match=message):
            train(config_from_dict(raw), tmp_path / "d")
    assert not (tmp_path / "d").exists()
    # A run written into the source's best/ would overwrite the weights it starts from.
    from pixelwise.cli import main

    copy = tmp_path / "copy" / "saved"
    shutil.copytree(tmp_path / "fresh" / "best", copy / "best")
    recipe = tmp_path / "phase2.yaml"
    recipe.write_text(json.dumps(tiny(model={"init_from": str(copy / "best")})))
    for out in (copy / "best", copy):
        assert main(["train", "--config", str(recipe), "--out", str(out)]) == 2
        assert "lies inside the run directory" in capsys.readouterr().err
    (copy / "best" / "config.json").rename(copy / "best.json")  # no saved model in --out: init_from inside it
    recipe.write_text(json.dumps(tiny(model={"init_from": str(copy / "best.json")})))
    assert main(["train", "--config", str(recipe), "--out", str(copy)]) == 2
    assert "lies inside the run directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model.init_from and model.options.pretrained_backbone both give"):
        config_from_dict(tiny(model={**start, "options": {"backbone": "resnet18", "pretrained_backbone": True}}))
