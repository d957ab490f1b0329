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


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pixelwise", "models", "--num-classes", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hypercolumn" in result.stdout


def test_bad_arguments_are_an_error_not_a_traceback():
    result = subprocess.run([sys.executable, "-m", "pixelwise", "models", "--num-classes", "many"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid int value" in result.stderr and "Traceback" not in result.stderr
