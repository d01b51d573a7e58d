"""What only the board emulator has: injected faults (lost and damaged frames, flash writes
that flip bits), its profiles' arena and RAM limits, float32 models in TFLM. The flows every
board shares (deploy, infer, train-last, noise, timeouts, refusals) are in test_board_all.py."""

import hashlib
import os
import subprocess

import numpy as np
import pytest

pytest.importorskip("serial")
pytest.importorskip("cobs")
pytest.importorskip("tflite_micro")

from boardutil import EDGEKD, cli, ok, one_line_error

from edgekd.data import load_dataset
from edgekd.distill.supervised import fit
from edgekd.export import export_tflite
from edgekd.export.int8_ref import Int8Model
from edgekd.export.tflm import run_tflm
from edgekd.nn.io import save_model
from edgekd.nn.model import Sequential
from firmware_bridge import commands
from firmware_bridge.launch import BoardProcess


def mlp(hidden, seed):
    return {"input_shape": [64], "num_classes": 10,
            "layers": [{"type": "dense", "units": hidden, "activation": "relu"},
                       {"type": "dense", "units": 10}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("board-models")
    ds = load_dataset("digits")
    student = Sequential(mlp(32, 0), seed=0)
    fit(student, ds, epochs=6, batch=32, lr=3e-3)
    teacher = Sequential(mlp(128, 1), seed=1)
    fit(teacher, ds, epochs=10, batch=32, lr=3e-3)
    save_model(d / "teacher.npz", teacher)
    export_tflite(student, d / "student.tflite", int8=True, calib_x=ds.x_train[:256])
    export_tflite(student, d / "student_f32.tflite")
    return {"dir": d, "ds": ds, "student": d / "student.tflite",
            "student_f32": d / "student_f32.tflite", "teacher": d / "teacher.npz"}


def tflm_reference(model_path, ds):
    """TFLM's interpreter on the test split, inputs quantized by edgekd.export."""
    data = model_path.read_bytes()
    ref = Int8Model.from_tflite(data)
    y = run_tflm(data, ref.quantize_input(ds.x_test))
    return y, float(np.mean(y.argmax(axis=1) == ds.y_test))


def emulator(*args):
    return BoardProcess(EDGEKD + ["board", "emulate", "--json", *args])


def test_faults_garbage_drops_and_corruption_change_nothing(models):
    ref_y, ref_acc = tflm_reference(models["student"], models["ds"])
    with emulator("--drop-rate", "0.05", "--corrupt-rate", "0.05", "--seed", "3") as board:
        p = board.port
        dep = ok(p, "deploy", str(models["student"]), "--timeout", "0.3", "--retries", "8")
        assert dep["model_bytes"] == models["student"].stat().st_size
        import serial
        with serial.serial_for_url(p) as port:  # line noise between two commands
            port.write(os.urandom(3000))
        inf = ok(p, "infer", "--data", "digits", "--timeout", "0.3", "--retries", "8")
        assert inf["test_accuracy"] == ref_acc
        assert inf["outputs_sha256"] == hashlib.sha256(ref_y.astype(np.int8).tobytes()).hexdigest()
        assert dep["resends"] + inf["resends"] > 0


def test_flash_corruption_is_caught_per_chunk(models):
    """Every chunk written to flash is checked against its CRC; a bad write is resent."""
    with emulator("--flash-error-rate", "0.3", "--seed", "5", "--max-payload", "512") as board, \
            commands.connect(board.port, timeout=0.3, retries=10) as client:
        res = commands.deploy(client, models["student"].read_bytes(), chunk_retries=10)
        assert res["chunks_resent"] > 0
        assert commands.info(client).model_sha256.hex() == res["sha256"]


def test_arenas_and_layers_that_do_not_fit_are_refused(models):
    """(The model space is checked on every board kind, in test_board_all.py.)"""
    with emulator("--arena", "1024") as board:
        r = cli(board.port, "deploy", str(models["student"]))
        one_line_error(r, "tensor arena needs", "this board has 1,024")
    # 48 KiB firmware + 10,000 arena leave 848 bytes: too few for a 32x10 float layer + grads
    with emulator("--ram", str(48 * 1024 + 10848), "--arena", "10000") as board:
        r = cli(board.port, "deploy", str(models["student"]))
        one_line_error(r, "training the last layer needs 2,640 bytes", "848 are left")


def test_float_models_run_in_tflm(models):
    with emulator() as board:
        ok(board.port, "deploy", str(models["student_f32"]))
        info = ok(board.port, "info")
        assert info["input"]["dtype"] == "float32"
        data = models["student_f32"].read_bytes()
        y = run_tflm(data, models["ds"].x_test)
        acc = float(np.mean(y.argmax(axis=1) == models["ds"].y_test))
        assert ok(board.port, "infer", "--data", "digits")["test_accuracy"] == acc


def test_bad_arguments_are_one_line_errors():
    one_line_error(cli("/dev/nonexistent-tty", "info"), "cannot open serial port")
    r = subprocess.run(EDGEKD + ["board", "emulate", "--profile", "pi-zero"],
                       check=False, capture_output=True, text=True, timeout=60)
    one_line_error(r, "Linux board")


def test_edgekd_never_imports_firmware_bridge():
    root = os.path.join(os.path.dirname(__file__), "..", "edgekd")
    offenders = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(".py") and not path.endswith(os.path.join("cli", "board_cmd.py")):
                with open(path, encoding="utf-8") as fh:
                    if "firmware_bridge" in fh.read():
                        offenders.append(path)
    assert offenders == []
