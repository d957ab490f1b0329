"""The command line: ``pixelwise models``."""

import subprocess
import sys

from pixelwise.cli import main


def test_models_lists_every_foundation_model_with_parameters(capsys):
    assert main(["models", "--num-classes", "21"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name in ("fcn32s", "fcn16s", "fcn8s", "unet", "hypercolumn"):
        assert name in rows
    assert "134.49M" in rows["fcn8s"] and "vgg16 (default)" in rows["fcn8s"] and "Long" in rows["fcn8s"]
    assert "31.03M" in rows["unet"]  # 3 input channels, 21 classes, same padding
    assert "own (default), resnet34" in rows["unet"] and "timm:<name>" in rows["deeplabv3"]
    assert "timm" not in rows["fcn8s"] and "timm" not in rows["hypercolumn"]


def test_backbones_lists_the_built_in_ones_and_says_any_timm_model_works(capsys):
    from pixelwise.backbones import BACKBONES

    assert main(["models", "--backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(BACKBONES) < set(rows)
    # resnet34's maps, read from the built network: the stem at stride 2, then the four stages.
    assert "2:64 4:64 8:128 16:256 32:512" in rows["resnet34"] and rows["resnet34"].split()[1] == "8/16/32"
    assert rows["vgg16"].split()[1] == "32" and rows["vgg16"].endswith("fcn16s, fcn32s, fcn8s, hypercolumn")
    assert "any timm model that supports features_only=True" in rows["timm:<name>"]


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pixelwise", "models", "--num-classes", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hypercolumn" in result.stdout


def test_bad_arguments_are_an_error_not_a_traceback():
    result = subprocess.run([sys.executable, "-m", "pixelwise", "models", "--num-classes", "many"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid int value" in result.stderr and "Traceback" not in result.stderr


def imported_after(code: str) -> set[str]:
    """The heavy packages a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(result.stdout.split())
    return {name for name in ("torch", "torchvision", "matplotlib", "numpy", "PIL") if name in loaded} | {
        name for name in ("pixelwise.infer.segmenter", "pixelwise.train.trainer") if name in loaded}


def test_help_imports_nothing_heavy():
    """``pixelwise --help`` and every ``pixelwise <command> --help`` build their parsers without torch."""
    assert imported_after("from pixelwise.cli import build_parser\nbuild_parser()") == set()
    for command in ("train", "eval", "predict", "serve", "export", "check-data", "quickstart", "models"):
        result = subprocess.run([sys.executable, "-m", "pixelwise", command, "--help"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "usage: pixelwise" in result.stdout, result.stderr


def test_imports_load_only_what_they_need():
    assert imported_after("import pixelwise") == set()
    assert "pixelwise.infer.segmenter" not in imported_after("import pixelwise.nn")
    assert "pixelwise.train.trainer" not in imported_after("import pixelwise.nn")
    # eval under torchrun needs the process group helpers, not the training loop.
    assert "pixelwise.train.trainer" not in imported_after("import pixelwise.train.distributed")
    assert "pixelwise.train.trainer" not in imported_after("import pixelwise.train.evaluate")
