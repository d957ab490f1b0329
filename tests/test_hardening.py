"""Misuse gets one clear line, never a traceback; resume never silently restarts; small defects stay fixed.

Every probe drives the real command line (``pixelwise.cli.main``, the console script's entry point).
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import create_model, load_model, save_model
from pixelwise.cli import main
from pixelwise.train import config_from_dict, train
from pixelwise.train.state import load_state

TINY = {
    "name": "tiny",
    "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
    "data": {"name": "synthetic", "options": {"num_images": 4, "image_size": 16}, "val_options": {"num_images": 2},
             "scale_range": None, "hflip": False},
    "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "progress": False, "threads": 1},
    "eval": {"every": 4, "batch_size": 2, "plot_images": 0},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A trained tiny run with two checkpoints (steps 2 and 4) in state/."""
    directory = tmp_path_factory.mktemp("run") / "run"
    train(config_from_dict(json.loads(json.dumps(TINY))), directory)
    return directory


@pytest.fixture()
def picture(tmp_path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def one_line_error(capsys, command: str) -> str:
    """The CLI's stderr, checked to be the single ``pixelwise COMMAND: error: ...`` line."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"pixelwise {command}: error: "), err
    return err


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


@pytest.mark.skipif(torch.cuda.is_available(), reason="probes a machine without CUDA")
def test_devices_are_checked_once_with_a_clear_error(run, picture, tmp_path, capsys):
    assert main(["predict", str(picture), "--checkpoint", str(run), "--out", str(tmp_path / "o"), "--device",
                 "cuda"]) == 2
    assert "device 'cuda' requested but CUDA is not available" in one_line_error(capsys, "predict")
    assert main(["predict", str(picture), "--checkpoint", str(run), "--out", str(tmp_path / "o"), "--device",
                 "bogus"]) == 2
    assert "device 'bogus' is not a device name" in one_line_error(capsys, "predict")
    assert not (tmp_path / "o").exists()  # refused before any output was made


def test_output_paths_are_checked_before_work(run, picture, tmp_path, capsys):
    a_file, a_folder = tmp_path / "file", tmp_path / "folder"
    a_file.write_text("")
    a_folder.mkdir()
    assert main(["predict", str(picture), "--checkpoint", str(run), "--out", str(a_file)]) == 2
    assert f"--out {a_file}: {a_file} is a file, not a folder" in one_line_error(capsys, "predict")
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(a_folder)]) == 2
    assert f"--out {a_folder} is a folder" in one_line_error(capsys, "export")
    assert main(["eval", "--checkpoint", str(run), "--json", str(a_folder)]) == 2
    assert "--json" in one_line_error(capsys, "eval")
    assert list(a_folder.iterdir()) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "99999"], "argument --port: a TCP port is 0 to 65535, got 99999"),
    (["--max-pixels", "-1"], "argument --max-pixels: must be at least 1, got -1"),
    (["--max-concurrent", "0"], "argument --max-concurrent: must be at least 1, got 0"),
])
def test_serve_refuses_impossible_limits(run, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", str(run), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--option", "bogus=1"], "unknown option(s) ['bogus'] for data set 'synthetic'; valid options: "),
    (["--option", "num_classes=abc"], "data set 'synthetic': num_classes = 'abc' is not a valid int"),
    (["--option", "num_classes"], "--option 'num_classes': expected key=value"),
])
def test_data_set_options_are_checked_by_name_and_type(capsys, argv, message):
    assert main(["check-data", "synthetic", *argv]) == 2
    assert message in one_line_error(capsys, "check-data")


@pytest.mark.parametrize(("override", "message"), [
    ("data.options.bogus=1", "unknown option(s) ['bogus'] for data set 'synthetic'"),
    ("model.options.base_channels=abc", "model 'unet': base_channels = 'abc' is not a valid int"),
    ("model.options.padding=full", "model 'unet': padding = 'full' is not one of 'same', 'valid'"),
])
def test_train_refuses_bad_options_before_the_first_step(tmp_path, capsys, override, message):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(TINY))
    assert main(["train", "--config", str(recipe), "--set", override, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys, "train")
    assert not (tmp_path / "run" / "state").exists()


def test_a_hand_edited_config_json_names_the_bad_field(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "copy")
    card = json.loads((copy / "config.json").read_text())
    card["options"]["base_channels"] = "sixteen"
    (copy / "config.json").write_text(json.dumps(card))
    assert main(["eval", "--checkpoint", str(copy)]) == 2
    assert "config.json: model 'unet': base_channels = 'sixteen' is not a valid int" in one_line_error(capsys, "eval")
    card["options"]["base_channels"] = 4
    for field, value, message in [("class_names", ["a", "b"], "class_names has 2 entries for a model with 5"),
                                  ("version", None, '"version" must be a whole number'),
                                  ("metadata", [["a", 1]], "metadata must be a mapping, got [['a', 1]]"),
                                  ("normalization", {"mean": [0.5] * 3}, "normalization needs both mean and std")]:
        (copy / "config.json").write_text(json.dumps({**card, field: value}))
        assert main(["eval", "--checkpoint", str(copy)]) == 2
        assert message in one_line_error(capsys, "eval")


def test_check_data_reports_a_decompression_bomb_and_scans_the_rest(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(png_header_claiming(100_000, 100_000))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "bomb.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "fine.png")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "masks" / "fine.png")
    assert main(["check-data", f"folder:{tmp_path}", "--split", "all", "--option", "num_classes=2"]) == 1
    out = capsys.readouterr().out
    assert "bomb.png: image is too large to decode" in out
    assert "4 x 4: 1" in out and "bit depth: 8-bit: 1; pixel values 0..0" in out


def test_resume_refuses_when_there_is_nothing_to_resume(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "copy")
    shutil.rmtree(copy / "state")
    before = {path: path.stat().st_mtime_ns for path in copy.rglob("*")}
    assert main(["train", "--resume", str(copy)]) == 2
    assert "nothing to resume" in one_line_error(capsys, "train")
    assert {path: path.stat().st_mtime_ns for path in copy.rglob("*")} == before  # the run was left alone


def test_damaged_state_falls_back_to_the_older_checkpoint_or_names_the_file(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "copy")
    state = copy / "state"
    assert sorted(p.name for p in state.glob("step-*")) == [
        "step-00000002.json", "step-00000002.safetensors", "step-00000004.json", "step-00000004.safetensors"]
    # Truncated tensors: the checksum catches it, and resuming uses step 2, saying so.
    latest = state / "step-00000004.safetensors"
    latest.write_bytes(latest.read_bytes()[:200])
    step, _ = load_state(copy)
    assert step == 2
    assert "step-00000004.safetensors: damaged" in capsys.readouterr().err
    # The older one edited too (valid JSON, changed content): its checksum fails, nothing intact is left.
    older = state / "step-00000002.json"
    document = json.loads(older.read_text())
    document["state"]["best_miou"] = 0.99
    older.write_text(json.dumps(document))
    assert main(["train", "--resume", str(copy)]) == 2
    err = one_line_error(capsys, "train")
    assert "no intact checkpoint" in err and "step-00000002.json: damaged" in err


def test_http_errors_use_the_documented_body(run):
    httpx = pytest.importorskip("httpx")
    from pixelwise.infer import Segmenter
    from pixelwise.serve.app import create_app
    from pixelwise.serve.background import serve_in_thread

    with serve_in_thread(create_app(Segmenter(run))) as url:
        responses = (httpx.get(f"{url}/nowhere"), httpx.get(f"{url}/v1/segment"))
        card = httpx.get(f"{url}/v1/model").json()["card"]
    assert [response.status_code for response in responses] == [404, 405]
    assert all(set(response.json()) == {"error"} for response in responses)
    assert "train_config" not in card and card["data"] == {"name": "synthetic"}  # no server paths


def test_outputs_name_their_source_without_ambiguity(run, tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), str(tmp_path / "b.png"),
                 str(tmp_path / "b.png"), "--checkpoint", str(run), "--out", str(out), "--stats"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png.png", "b.png", "stats.csv"]
    with open(out / "stats.csv") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == [str(tmp_path / n) for n in ("a.png", "a.jpg", "b.png")]
    # Another spelling of a path, or a link to the file, is the same input; same names in other folders get
    # their folder.
    (tmp_path / "left").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "b.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "left" / "b.png")
    again = tmp_path / "again"
    assert main(["predict", str(tmp_path / "b.png"), str(tmp_path / "left" / ".." / "b.png"),
                 str(tmp_path / "link.png"), str(tmp_path / "left" / "b.png"), "--checkpoint", str(run),
                 "--out", str(again)]) == 0
    assert {p.name for p in again.iterdir()} == {f"{tmp_path.name}__b.png.png", "left__b.png.png"}


def test_stats_grow_a_row_per_file_as_they_are_done(run, tmp_path):
    from pixelwise.infer import Segmenter
    from pixelwise.infer.files import FilePredictor

    images = []
    for index in range(2):
        images.append(tmp_path / f"{index}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(images[-1])
    out = tmp_path / "out"
    predictor = FilePredictor(Segmenter(run), out, stats=True)
    predictor.file(images[0], "0")
    # A run killed here keeps the finished file's row.
    assert len((out / "stats.csv").read_text().splitlines()) == 2
    predictor.file(images[1], "1")
    assert len((out / "stats.csv").read_text().splitlines()) == 3


def test_exported_onnx_carries_the_normalisation_and_classes(run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    metadata = onnxruntime.InferenceSession(str(tmp_path / "m.onnx")).get_modelmeta().custom_metadata_map
    card = load_model(run).card
    assert json.loads(metadata["mean"]) == list(card.normalization.mean)
    assert json.loads(metadata["std"]) == list(card.normalization.std)
    assert json.loads(metadata["class_names"]) == card.class_names
    assert json.loads(metadata["pixelwise_card"])["name"] == "unet"


def test_saved_files_follow_the_umask_not_private(tmp_path):
    """atomic_write's temporary file is private (0600); the file it becomes gets the usual 0666 & ~umask."""
    from pixelwise.fileio import UMASK

    save_model(create_model("unet", 2, base_channels=4, depth=1), tmp_path)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~UMASK


@pytest.mark.parametrize(("argv", "message"), [
    (["check-data", "synthetic", "--option", "image_size=0"], "synthetic image_size must be 1..4096 pixels, got 0"),
    (["check-data", "synthetic", "--option", "image_size=100000"], "synthetic image_size must be 1..4096"),
])
def test_impossible_data_set_sizes_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_line_error(capsys, argv[0])


def test_recipes_that_cannot_train_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["train", "--config", str(empty), "--out", str(tmp_path / "a")]) == 2
    assert "data.scale_range resizes each image by its own factor" in one_line_error(capsys, "train")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(TINY))
    assert main(["train", "--config", str(recipe), "--set", "model.options.base_channels=-4", "--out",
                 str(tmp_path / "b")]) == 2
    assert "base_channels and in_channels must be >= 1" in one_line_error(capsys, "train")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_without_latest_json_uses_the_newest_intact_step(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "copy")
    (copy / "state" / "latest.json").unlink()
    step, _ = load_state(copy)
    assert step == 4 and "latest.json: cannot be read" in capsys.readouterr().err


def test_serve_names_a_port_in_use(run, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", str(run), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys, "serve")


def test_predict_killed_midway_keeps_the_stats_of_every_finished_file(run, tmp_path):
    """SIGKILL ``pixelwise predict --stats`` while it works: stats.csv holds one whole row per mask written."""
    import signal
    import subprocess
    import sys
    import time

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(60):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(images / f"{index:02d}.png")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "pixelwise", "predict", str(images), "--checkpoint", str(run),
                                "--out", str(out), "--stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "stats.csv").is_file() or len((out / "stats.csv").read_text().splitlines()) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "predict ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with open(out / "stats.csv") as handle:
        rows = list(csv.reader(handle))[1:]
    assert 2 <= len(rows) < 60
    assert all(len(row) == 3 + 5 for row in rows)  # file, width, height and the five classes: no torn row
    masks = {path.name for path in out.glob("*.png")}
    assert {Path(row[0]).stem + ".png" for row in rows} <= masks


def test_eval_json_is_strict_json(tmp_path):
    """A class neither present nor predicted has no IoU (0 / 0): written as null, never a bare NaN."""
    from pixelwise.card import DataSource

    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / "masks" / "a.png")  # class 0 only
    model = create_model("unet", 3, base_channels=4, depth=1)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([50.0, -50.0, -50.0]))  # predicts class 0 everywhere
    save_model(model, tmp_path / "run",
               data=DataSource("folder", str(tmp_path / "data"), {"num_classes": 3}, val_split="all"))
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--json", str(tmp_path / "scores.json")]) == 0
    text = (tmp_path / "scores.json").read_text()
    scores = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert scores["iou"] == [1.0, None, None]
