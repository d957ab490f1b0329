"""Nothing a user made is lost, and misuse is one line: probes of a user and an attacker, each with its fix.

Writers never replace a run, a saved model or the input they read; appending outputs keep what is there.
The data-loss probes hash every file before and after and require them byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_hardening import TINY as HARDENING_TINY

from pixelwise import create_model, save_model
from pixelwise.cli import main
from pixelwise.infer import export_onnx
from pixelwise.train import config_from_dict, train

# The hardening probes' tiny recipe, one checkpoint and one evaluation in its two steps.
TINY = {**HARDENING_TINY, "train": {**HARDENING_TINY["train"], "steps": 2},
        "eval": {**HARDENING_TINY["eval"], "every": 2}}


def tiny_config(**train_settings):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train_settings)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(), directory)
    return directory


@pytest.fixture()
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, free to be attacked."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def fingerprint(folder: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under ``folder``."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"pixelwise {command}: error: "), err
    return err


def pictures(folder: Path, names: list[str], size=(20, 24)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    paths = []
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


# -- data loss ------------------------------------------------------------------------------------------


def test_quickstart_refuses_an_existing_run_and_leaves_it_byte_identical(run, capsys):
    before = fingerprint(run)
    assert main(["quickstart", "--out", str(run), "--set", "train.steps=2"]) == 2
    assert "already holds a run" in one_line_error(capsys, "quickstart")
    assert fingerprint(run) == before


def test_the_train_function_refuses_an_existing_run_as_the_command_does(run):
    before = fingerprint(run)
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(tiny_config(), run)
    assert fingerprint(run) == before


def test_train_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty \(notes.txt\)"):
        train(tiny_config(), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("target", ["model.safetensors", "best/config.json", "config.yaml", "state/latest.json"])
def test_export_never_writes_over_the_model_it_reads(run, capsys, target):
    before = fingerprint(run)
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(run / target)]) == 2
    assert "would replace a file of the saved model or run" in one_line_error(capsys, "export")
    with pytest.raises(ValueError, match="would replace"):  # the library keeps the rule too
        export_onnx(create_model("unet", 2, base_channels=4, depth=2), run / target)
    assert fingerprint(run) == before
    # Beside the model, under a name of its own, the export is written.
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(run / "model.onnx")]) == 0


def test_predict_twice_keeps_the_first_runs_stats_and_masks(run, tmp_path, capsys):
    first = pictures(tmp_path / "first", ["a.png", "b.png"])
    second = pictures(tmp_path / "second", ["c.png"])
    out = tmp_path / "out"
    assert main(["predict", *map(str, first), "--checkpoint", str(run), "--out", str(out), "--stats"]) == 0
    kept = fingerprint(out)
    assert main(["predict", *map(str, second), "--checkpoint", str(run), "--out", str(out), "--stats"]) == 0
    rows = list(csv.reader((out / "stats.csv").open()))
    assert rows[0][:3] == ["file", "width", "height"]
    assert [Path(row[0]).name for row in rows[1:]] == ["a.png", "b.png", "c.png"]
    assert {name: digest for name, digest in fingerprint(out).items() if name != "stats.csv"} == {
        **{name: digest for name, digest in kept.items() if name != "stats.csv"},
        "c.png": fingerprint(out)["c.png"]}
    # The same names again would replace the first run's masks: refused, unless asked for.
    capsys.readouterr()
    assert main(["predict", *map(str, first), "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "already holds a.png, b.png" in one_line_error(capsys, "predict")
    assert fingerprint(out)["a.png"] == kept["a.png"]
    assert main(["predict", *map(str, first), "--checkpoint", str(run), "--out", str(out), "--overwrite"]) == 0


def test_predict_refuses_stats_of_another_model(run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.csv").write_text("file,width,height,road,sky\nx.png,1,1,1,0\n")
    before = fingerprint(out)
    assert main(["predict", *map(str, pictures(tmp_path, ["a.png"])), "--checkpoint", str(run), "--out", str(out),
                 "--stats"]) == 2
    assert "another model" in one_line_error(capsys, "predict")
    assert fingerprint(out) == before


def test_predict_never_writes_a_mask_over_its_input(run, tmp_path, capsys):
    images = pictures(tmp_path / "photos", ["a.png", "b.png"])
    before = fingerprint(tmp_path / "photos")
    for flags in ([], ["--overwrite"]):
        assert main(["predict", str(tmp_path / "photos"), "--checkpoint", str(run), "--out",
                     str(tmp_path / "photos"), *flags]) == 2
        assert "would replace inputs" in one_line_error(capsys, "predict")
    assert fingerprint(tmp_path / "photos") == before and len(images) == 2


# -- tracebacks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runtime_that_cannot_take_the_model_is_one_line(tmp_path, capsys, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed (pip install 'pixelwise[openvino]')")
    save_model(create_model("hypercolumn", 3), tmp_path / "run")
    image = pictures(tmp_path, ["a.png"])[0]
    assert main(["predict", str(image), "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                 "--backend", backend]) == 2
    assert "hypercolumn" in one_line_error(capsys, "predict")


def test_a_symlink_loop_in_a_folder_is_skipped_and_the_rest_segmented(run, tmp_path, capsys):
    folder = tmp_path / "in"
    pictures(folder, ["good.png"])
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    code = main(["predict", str(folder), "--checkpoint", str(run), "--out", str(tmp_path / "out")])
    output = capsys.readouterr()
    assert code == 1 and "Traceback" not in output.err + output.out
    assert "loop.png" in output.out and "gone.png" in output.out and "1 done, 2 failed" in output.out
    assert (tmp_path / "out" / "good.png").is_file()


def test_resume_after_editing_the_model_options_names_the_option(run, capsys):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["options"]["base_channels"] = 8
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = fingerprint(run)
    assert main(["train", "--resume", str(run)]) == 2
    err = one_line_error(capsys, "train")
    assert "model.options.base_channels 8 (saved 4)" in err
    assert fingerprint(run) == before


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--set", "train.precision=fp16",
                 "--set", "train.device=cpu"]) == 2
    assert "fp16 needs a CUDA device" in one_line_error(capsys, "train")
    assert not out.exists() or not any(out.iterdir())
    # No dead end: the same folder takes the corrected run.
    assert main(["train", "--config", str(recipe), "--out", str(out), "--set", "train.device=cpu"]) == 0


def test_a_run_that_stopped_before_its_first_checkpoint_says_how_to_go_on(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    with pytest.raises(ValueError, match="stopped before its first checkpoint.*delete that folder"):
        train(tiny_config(), tmp_path)


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_partial_output(tmp_path):
    out = tmp_path / "gallery"
    process = subprocess.Popen([sys.executable, "-m", "pixelwise", "explain", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Interrupted while a topic is being computed: its staging folder exists or the first topic is done.
    while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "pixelwise explain: interrupted" and "Traceback" not in err, err
    leftovers = [path.name for path in tmp_path.rglob("*") if ".partial" in path.name or path.suffix == ".tmp"]
    assert leftovers == []


def folder_data(root: Path, mask_values: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    for split in ("val",):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{index}.png")
            mask = np.where(rng.random((16, 16)) > 0.5, mask_values[1], mask_values[0]).astype(np.uint8)
            Image.fromarray(mask).save(root / split / "masks" / f"{index}.png")


def test_eval_on_a_folder_takes_the_number_of_classes_from_the_model(tmp_path, capsys):
    model = create_model("unet", 2, base_channels=4, depth=2)
    save_model(model, tmp_path / "model", class_names=["background", "thing"])
    folder_data(tmp_path / "data", (0, 1))
    assert main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", f"folder:{tmp_path / 'data'}",
                 "--split", "val", "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert len(scores["iou"]) == 2 and scores["class_names"] == ["background", "thing"]


def test_eval_refuses_binary_masks_read_as_ignore_instead_of_printing_zero(tmp_path, capsys):
    save_model(create_model("unet", 2, base_channels=4, depth=2), tmp_path / "model")
    folder_data(tmp_path / "data", (0, 255))
    data = f"folder:{tmp_path / 'data'}"
    assert main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", data, "--split", "val"]) == 2
    assert "only the values 0 and 255" in one_line_error(capsys, "eval")
    # The fix the message suggests, given on the command line, scores them.
    assert main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", data, "--split", "val",
                 "--option", "label_map={255: 1}"]) == 0


def test_a_corrupt_video_is_one_line_not_an_ffmpeg_banner(run, tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed (pip install 'pixelwise[video]')")
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(3000))
    assert main(["predict", str(video), "--checkpoint", str(run), "--out", str(tmp_path / "out")]) == 1
    output = capsys.readouterr().out
    failures = [line for line in output.splitlines() if "broken.mp4" in line]
    assert failures and all("cannot read the video: " in line for line in failures), output
    assert "ffmpeg version" not in output and "libavcodec" not in output


def test_a_string_where_numbers_belong_in_config_json_names_the_field(run, capsys):
    card = json.loads((run / "config.json").read_text())
    card["normalization"]["mean"] = "0.5"
    (run / "config.json").write_text(json.dumps(card))
    assert main(["eval", "--checkpoint", str(run)]) == 2
    err = one_line_error(capsys, "eval")
    assert "normalization.mean must be a list of numbers" in err and "config.json" in err


def test_a_binary_file_given_as_the_recipe_is_named(tmp_path, capsys):
    picture = pictures(tmp_path, ["normal.png"])[0]
    assert main(["train", "--config", str(picture)]) == 2
    err = one_line_error(capsys, "train")
    assert str(picture) in err and "not a YAML text file" in err


def test_tile_without_slide_mode_is_refused_not_ignored(run, tmp_path, capsys):
    image = pictures(tmp_path, ["a.png"])[0]
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "out"),
                 "--tile", "64", "64"]) == 2
    assert "--mode slide" in one_line_error(capsys, "predict")


def test_explain_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "aspp"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert main(["explain", "aspp", "--out", str(tmp_path)]) == 2
    assert "holds aspp, which a topic would replace" in one_line_error(capsys, "explain")
    assert (mine / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_reduced_precision_segmenter_leaves_the_model_as_it_was_and_plans_memory(precision):
    from pixelwise.infer import Segmenter
    from pixelwise.infer.memory import plan_memory

    model = create_model("unet", 3, base_channels=4, depth=2)
    segmenter = Segmenter(model, precision=precision)
    assert {str(parameter.dtype) for parameter in model.parameters()} == {"torch.float32"}
    plan = plan_memory(segmenter, 256 << 20)  # what `pixelwise serve --precision` runs at start
    assert plan.max_pixels > 0
    assert segmenter.predict(np.zeros((30, 40, 3), np.uint8)).shape == (30, 40)


def test_a_bad_argument_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--checkpoint", "run", "--port", "99999"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pixelwise serve: error: argument --port: a TCP port is 0 to 65535, got 99999 "
                   "(see pixelwise serve --help)"), err


def test_eval_json_and_export_never_replace_a_users_file_or_a_runs_plot(run, tmp_path, capsys):
    mask = pictures(tmp_path / "data", ["0.png"])[0]
    before = fingerprint(tmp_path / "data")
    assert main(["eval", "--checkpoint", str(run), "--json", str(mask)]) == 2
    assert "exists and is no .json file" in one_line_error(capsys, "eval")
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(mask)]) == 2
    assert "exists and is no .onnx file" in one_line_error(capsys, "export")
    assert fingerprint(tmp_path / "data") == before
    plots = sorted(run.glob("*.png"))
    assert plots, "the trained run has its plots"
    run_before = fingerprint(run)
    assert main(["eval", "--checkpoint", str(run), "--json", str(plots[0])]) == 2
    assert "would replace a file of the saved model or run" in one_line_error(capsys, "eval")
    image = pictures(tmp_path / "in", [plots[0].name])[0]
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(run), "--overwrite"]) == 2
    assert "would replace files of the saved model or run" in one_line_error(capsys, "predict")
    assert fingerprint(run) == run_before


def test_odd_file_names_get_their_masks_and_stats_rows(run, tmp_path):
    folder = tmp_path / "in"
    names = [os.fsdecode(b"n\xff.png"), "x" * 250 + ".png"]
    pictures(folder, names)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--checkpoint", str(run), "--out", str(out), "--stats"]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted([*names, "stats.csv"])
    rows = (out / "stats.csv").read_bytes().splitlines()
    assert len(rows) == 3 and any(b"n\xff.png" in row for row in rows)
