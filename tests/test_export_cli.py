"""`edgekd export` as a user runs it: real processes, one JSON object, one-line errors,
nothing written on failure, and no export code on the device path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_export_float import SPECS, trained_like

from edgekd.nn.io import save_model
from edgekd.nn.model import Sequential

pytest.importorskip("tflite_micro")

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
DIGITS = {"input_shape": [64], "num_classes": 10, "layers": [
    {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 10}]}


def edgekd(*args, code="", check=True):
    """Run the CLI in a fresh interpreter (after `code`, e.g. to hide a package)."""
    prog = f"{code}\nfrom edgekd.cli import main\nmain({[str(a) for a in args]!r})"
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=ENV,
                       timeout=300, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"edgekd {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def one_line_error(p):
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("edgekd: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("export-cli")
    save_model(d / "digits.npz", Sequential(DIGITS, seed=0))
    save_model(d / "mixed.npz", trained_like(SPECS["mixed"]))
    nan = Sequential(DIGITS, seed=0)
    nan.layers[0].params["kernel"][3, 3] = np.nan
    save_model(d / "nan.npz", nan)
    return d


def test_int8_tflite_with_a_board_report(models, tmp_path):
    out = tmp_path / "m.tflite"
    p = edgekd("export", models / "digits.npz", "--int8", "--calib", "digits", "--profile",
               "nrf52840", "-o", out, "--json")
    r = json.loads(p.stdout)
    assert p.stdout.count("\n") == 1 and r["format"] == "tflite" and r["int8"]
    assert r["model_bytes"] == out.stat().st_size and r["path"] == str(out)
    assert r["input"]["dtype"] == "int8" and r["input"]["shape"] == [1, 64]
    b = r["board"]
    assert b["profile"] == "nrf52840" and b["fits"] and b["flash_bytes"] == 1024 * 1024
    assert b["predicted_arena_bytes"] > 0 and b["predicted_model_bytes"] > 0


def test_c_format_and_human_output(models, tmp_path):
    p = edgekd("export", models / "mixed.npz", "--format", "c", "--softmax", "-o",
               tmp_path / "model.h")
    assert "float32 TFLite model" in p.stdout and "SOFTMAX" in p.stdout
    assert (tmp_path / "model.h").exists() and (tmp_path / "model.cc").exists()


@pytest.mark.parametrize("args, message", [
    (["--int8", "--calib", "sensor"], "calibration samples have shape [64, 3], the model takes [64]"),
    (["--int8"], "--int8 needs calibration data"),
    (["--calib", "digits"], "add --int8"),
    (["--profile", "arduino-uno"], "unknown device profile"),
])
def test_bad_input_is_one_line_and_writes_nothing(models, tmp_path, args, message):
    p = edgekd("export", models / "digits.npz", *args, "-o", tmp_path / "m.tflite", check=False)
    assert message in one_line_error(p)
    assert not list(tmp_path.iterdir())


def test_nan_weights_are_refused(models, tmp_path):
    p = edgekd("export", models / "nan.npz", "-o", tmp_path / "m.tflite", check=False)
    assert "NaN" in one_line_error(p)
    assert not list(tmp_path.iterdir())


def test_missing_tflite_micro_names_the_extra(models, tmp_path):
    p = edgekd("export", models / "digits.npz", "-o", tmp_path / "m.tflite", check=False,
               code="import sys; sys.modules['tflite_micro'] = None")
    assert "pip install 'edgekd[mcu]'" in one_line_error(p)
    assert not list(tmp_path.iterdir())


def test_the_cli_loads_no_export_code_until_export_runs():
    code = ("import sys, edgekd.cli; "
            "print([m for m in sys.modules if m.startswith(('edgekd.export', 'tflite_micro'))])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       check=True)
    assert p.stdout.strip() == "[]"
