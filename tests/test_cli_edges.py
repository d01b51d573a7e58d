"""Rough edges a new user hits, each as the user meets it: a real `edgekd` process, one line on
stderr, a non-zero exit, nothing written that should not be."""

import json
import subprocess
import sys

import numpy as np
import pytest
from test_cli import ENV, STUDENT, TEACHER, as_json, edgekd

SENSOR_STUDENT = {"input_shape": [64, 3], "num_classes": 10, "layers": [
    {"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "global_avgpool"}, {"type": "dense", "units": 10}]}


def one_line_error(p, *words):
    """A failed command: exit 1, one line on stderr naming `words`, no traceback."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    err = p.stderr.strip()
    assert err.startswith("edgekd: error: ") and "\n" not in err, err
    assert "internal error" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    for name, spec in (("teacher", TEACHER), ("student", STUDENT), ("sensor", SENSOR_STUDENT)):
        (d / f"{name}.json").write_text(json.dumps(spec))
    edgekd("teacher", "--spec", d / "teacher.json", "--data", "digits", "--epochs", 2,
           "-o", d / "teacher.npz")
    return d


# -- 3: shape mismatches ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_a_teacher_for_other_data_is_refused_before_training(files, tmp_path, backend):
    p = edgekd("train", "--student", files / "sensor.json", "--teacher", files / "teacher.npz",
               "--data", "sensor", "--out", tmp_path / "run", "--backend", backend, check=False)
    one_line_error(p, "teacher", "[64]", "[64, 3]")
    assert not (tmp_path / "run").exists()


def test_a_student_for_other_data_is_a_local_error_not_a_host_refusal(files, tmp_path):
    p = edgekd("train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
               "--data", "sensor", "--out", tmp_path / "run", check=False)
    assert "host refused" not in one_line_error(p, "student spec", "[64, 3]")
    five = {**STUDENT, "num_classes": 5,
            "layers": [STUDENT["layers"][0], {"type": "dense", "units": 5}]}
    (tmp_path / "five.json").write_text(json.dumps(five))
    p = edgekd("train", "--student", tmp_path / "five.json", "--teacher", files / "teacher.npz",
               "--data", "digits", "--out", tmp_path / "run", check=False)
    assert "host refused" not in one_line_error(p, "5 classes")


def test_serve_refuses_a_teacher_that_cannot_read_its_data(files):
    p = edgekd("serve", "--teacher", files / "teacher.npz", "--data", "sensor", "--bind",
               "127.0.0.1:0", check=False)
    one_line_error(p, "teacher", "[64, 3]")


def test_board_train_last_checks_the_teacher_before_dialing(files):
    p = edgekd("board", "train-last", "--teacher", files / "teacher.npz", "--data", "sensor",
               "--port", "/dev/null", check=False)
    one_line_error(p, "teacher", "[64, 3]")


# -- 4: missing extras ----------------------------------------------------------------------
@pytest.mark.parametrize("missing,args", [
    ("serial", ["board", "info", "--port", "/dev/null"]),
    ("cobs", ["board", "emulate"]),
    ("tflite_micro", ["export", "TEACHER", "-o", "x.tflite"]),
])
def test_a_missing_extra_names_the_install_command(files, tmp_path, missing, args):
    """Run edgekd with the optional package made unimportable, as on a plain install."""
    args = [str(files / "teacher.npz") if a == "TEACHER" else a for a in args]
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "from edgekd.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path, timeout=60, check=False)
    one_line_error(p, "pip install 'edgekd[")
