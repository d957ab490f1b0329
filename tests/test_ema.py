"""The EMA of the weights: a hand-written average as reference, and what the trainer ships with it."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pixelwise import load_model
from pixelwise.checkpoint import save_model
from pixelwise.train import config_from_dict, train
from pixelwise.train.ema import weight_average
from pixelwise.train.evaluate import evaluate_checkpoint
from pixelwise.train.state import load_state
from tests.test_train import tiny


@pytest.mark.parametrize("warmup", [10.0, 3.0])
def test_average_follows_the_warmed_up_formula_for_weights_and_batchnorm_statistics(warmup):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    average = weight_average(model, decay=0.9, warmup=warmup)
    reference = None
    for updates in range(30):
        with torch.no_grad():  # a stand-in for an optimizer step and a forward pass in train mode
            for tensor in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                tensor.add_(torch.randn_like(tensor))
            model[1].num_batches_tracked += 1
        average.update_parameters(model)
        current = copy.deepcopy(model.state_dict())
        if reference is None:
            reference = current
        else:
            decay = min(0.9, (1 + updates) / (warmup + updates))
            for key, value in current.items():
                if value.is_floating_point():
                    reference[key] = decay * reference[key] + (1 - decay) * value
    averaged = average.module.state_dict()
    for key, value in reference.items():
        if value.is_floating_point():
            torch.testing.assert_close(averaged[key], value, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(averaged[key], model.state_dict()[key])
    assert averaged["1.num_batches_tracked"].item() == 30  # counters are copied, not averaged
    with pytest.raises(ValueError, match="decay must be in"):
        weight_average(model, decay=1.0)
    with pytest.raises(ValueError, match="warm-up must be > 1"):
        weight_average(model, decay=0.9, warmup=1.0)


def test_trainer_validates_and_ships_the_average_and_keeps_it_for_resume(tmp_path):
    config = config_from_dict(tiny(train={"ema_decay": 0.5}))
    train(config, tmp_path / "ema")
    step, state = load_state(tmp_path / "ema")
    shipped = load_file(tmp_path / "ema" / "model.safetensors")
    assert step == 6 and state["ema"]["n_averaged"].item() == 6
    assert all(torch.equal(value, state["ema"][f"module.{key}"]) for key, value in shipped.items())
    assert any(not torch.equal(value, state["model"][key]) for key, value in shipped.items())
    assert load_model(tmp_path / "ema").card.step == 6

    plain = config_from_dict(tiny())
    train(plain, tmp_path / "plain")
    with pytest.raises(ValueError, match="started without train.ema_decay"):
        train(config_from_dict(tiny(train={"ema_decay": 0.5, "steps": 9})), tmp_path / "plain", resume=True)


def test_checkpoint_choice_scores_raw_weights_and_their_average_at_each_kept_state(tmp_path):
    # A small rate, so that 30 steps leave the raw weights and their average scoring apart.
    config = config_from_dict(tiny(train={"ema_decay": 0.9, "checkpoint_every": 15, "steps": 30},
                                   eval={"every": 30}, optim={"lr": 0.003}))
    train(config, tmp_path / "run")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_choice.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                            check=True)
    scores = dict(re.findall(r"^(step-\d+ +\w+): (mIoU [\d.]+, pixel accuracy [\d.]+)$", result.stdout,
                             re.MULTILINE))
    assert list(scores) == ["step-00000015 raw", "step-00000015 ema", "step-00000030 raw", "step-00000030 ema"]
    # The run ships the average of its last step: the script's "ema" at step 30 must score exactly as it does.
    shipped, _ = evaluate_checkpoint(tmp_path / "run", device="cpu")
    assert scores["step-00000030 ema"] == (f"mIoU {100 * shipped['miou']:.2f}, "
                                           f"pixel accuracy {100 * shipped['pixel_accuracy']:.2f}")
    assert scores["step-00000030 raw"] != scores["step-00000030 ema"]

    empty = tmp_path / "empty"
    save_model(load_model(tmp_path / "run"), empty)
    failed = subprocess.run([sys.executable, str(script), str(empty)], capture_output=True, text=True)
    assert failed.returncode != 0 and "no training states" in failed.stderr
