"""Exact resume: a run SIGKILLed after its first checkpoint and resumed ends bit-identical to an uninterrupted one."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from pixelwise.train.sampling import SampleStream

RECIPE = """
name: tiny
model: {name: unet, options: {base_channels: 4, depth: 2, batch_norm: true}}
data:
  name: synthetic
  options: {num_images: 12, image_size: 16}
  val_options: {num_images: 4}
  scale_range: [0.75, 1.25]
  crop_size: 16
  rotation: 10
  vflip: true
  quarter_turns: true
optim: {optimizer: sgd, lr: 0.05, momentum: 0.9, warmup_steps: 3}
train: {steps: 40, batch_size: 4, accumulate: 2, seed: 3, deterministic: true, threads: 1, ema_decay: 0.9,
        log_every: 5, checkpoint_every: 4, progress: false}
eval: {every: 20, batch_size: 4, plot_images: 0}
"""


def take(stream: SampleStream, count: int) -> list[tuple[int, int]]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def test_sample_stream_is_a_pure_function_of_the_position():
    whole = take(SampleStream(7, seed=1), 30)
    assert take(SampleStream(7, seed=1, start=11), 19) == whole[11:]
    for epoch in range(4):  # every epoch visits every sample once, in its own order
        assert sorted(index for index, _ in whole[7 * epoch: 7 * epoch + 7]) == list(range(7))
    assert [index for index, _ in whole[:7]] != [index for index, _ in whole[7:14]]
    assert len({seed for _, seed in whole}) == 30  # a fresh augmentation draw for every sample
    # Two ranks interleave into the single-process stream.
    ranks = [take(SampleStream(7, seed=1, start=4, rank=r, world_size=2), 5) for r in (0, 1)]
    assert [pair for both in zip(*ranks, strict=True) for pair in both] == whole[4:14]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pixelwise", "train", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_sigkill_then_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(command("--config", str(recipe), "--out", str(whole)), env=environment(), check=True,
                   capture_output=True)

    process = subprocess.Popen(command("--config", str(recipe), "--out", str(killed)), env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (killed / "state" / "latest.json").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))  # somewhere after the first checkpoint, possibly mid-write
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = int((killed / "state" / "latest.json").read_text().split(":")[1].strip(" }\n"))
    assert interrupted_at < 40

    subprocess.run(command("--resume", str(killed)), env=environment(), check=True, capture_output=True)
    for name in ("model.safetensors", "best/model.safetensors"):
        expected, actual = load_file(whole / name), load_file(killed / name)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}: {key} differs after resuming at {interrupted_at}"
    # The log was cut back to the checkpoint and continued: the same rows as the uninterrupted run.
    assert (whole / "metrics.jsonl").read_text().count("\n") == (killed / "metrics.jsonl").read_text().count("\n")
