"""The reference C firmware, built for this host with gcc and serving a pseudo-terminal:
the same CLI flows as against the emulator, exact agreement with TFLM's int8 outputs,
last-layer training that agrees with the emulator's, its compile-time limits, and faults."""

import hashlib
import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("serial")
pytest.importorskip("cobs")
pytest.importorskip("tflite_micro")
if shutil.which(os.environ.get("CC", "gcc")) is None:
    pytest.skip("no C compiler", allow_module_level=True)

from boardutil import EDGEKD, cli, ok, one_line_error

from edgekd.data import load_dataset
from edgekd.distill.losses import kd_loss
from edgekd.distill.supervised import fit
from edgekd.errors import EdgekdError
from edgekd.export import export_tflite
from edgekd.export.int8_ref import Int8Model
from edgekd.export.tflm import run_tflm
from edgekd.nn.io import save_model
from edgekd.nn.model import Sequential
from edgekd.teachers import load_teacher
from firmware_bridge import commands, ekb
from firmware_bridge import messages as m
from firmware_bridge.build import build_firmware
from firmware_bridge.emulator.tflm_model import TflmModel
from firmware_bridge.launch import BoardProcess
from firmware_bridge.protocol import BoardError, BoardTimeout


def mlp(*hidden, input_shape=(64,)):
    layers = [{"type": "dense", "units": h, "activation": "relu"} for h in hidden]
    return {"input_shape": list(input_shape), "num_classes": 10,
            "layers": layers + [{"type": "dense", "units": 10}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fw-models")
    ds = load_dataset("digits")
    student = Sequential(mlp(32, 16), seed=0)
    fit(student, ds, epochs=6, batch=32, lr=3e-3)
    teacher = Sequential(mlp(128), seed=1)
    fit(teacher, ds, epochs=10, batch=32, lr=3e-3)
    save_model(d / "teacher.npz", teacher)
    calib = ds.x_train[:256]
    export_tflite(student, d / "student.tflite", int8=True, calib_x=calib)
    export_tflite(student, d / "student_f32.tflite")
    export_tflite(teacher, d / "teacher.tflite", int8=True, calib_x=calib)
    return {"dir": d, "ds": ds, "student": d / "student.tflite",
            "student_f32": d / "student_f32.tflite", "teacher": d / "teacher.npz",
            "teacher_tflite": d / "teacher.tflite"}


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return build_firmware(str(tmp_path_factory.mktemp("fw-build")))


def reference_kd_loss(model_path, ds, teacher_path):
    """The KD loss of the deployed (dequantized) last layer over the training split, from
    TFLM's features and edgekd's kd_loss: what loss_before must be."""
    tm = TflmModel(model_path.read_bytes(), 1 << 20)
    x = Int8Model.from_tflite(model_path.read_bytes()).quantize_input(ds.x_train)
    feats = np.stack([tm.run(r)[1] for r in x])
    t = load_teacher(teacher_path, ds).logits(ds.x_train)
    return kd_loss(tm.head.logits(feats), t, ds.y_train, 4.0, 0.9).loss


def test_c_firmware_deploy_infer_train(models, firmware):
    data = models["student"].read_bytes()
    ref = Int8Model.from_tflite(data)
    ref_y = run_tflm(data, ref.quantize_input(models["ds"].x_test))
    np.testing.assert_array_equal(ref.run(ref.quantize_input(models["ds"].x_test)), ref_y)
    ref_acc = float(np.mean(ref_y.argmax(axis=1) == models["ds"].y_test))
    with BoardProcess([firmware]) as board:
        p = board.port
        info = ok(p, "info")
        assert info["format"] == "ekb" and info["name"] == "edgekd-c" and info["protocol"] == 1
        dep = ok(p, "deploy", str(models["student"]))
        blob = ekb.from_tflite(data)
        assert ekb.describe(blob) == ([(64, 32), (32, 16), (16, 10)], ekb.DT_I8, ekb.DT_I8)
        assert dep["format"] == "ekb" and dep["model_bytes"] == len(blob)
        assert dep["sha256"] == hashlib.sha256(blob).hexdigest()

        inf = ok(p, "infer", "--data", "digits")
        assert inf["output_dtype"] == "int8"
        assert inf["outputs_sha256"] == hashlib.sha256(ref_y.astype(np.int8).tobytes()).hexdigest()
        assert inf["test_accuracy"] == ref_acc

        tr = ok(p, "train-last", "--teacher", str(models["teacher"]), "--data", "digits",
                "--epochs", "4")
        want = reference_kd_loss(models["student"], models["ds"], models["teacher"])
        assert tr["loss_before"] == pytest.approx(want, rel=1e-4)
        assert tr["loss_after"] < 0.8 * tr["loss_before"], tr
        assert 0 < tr["bytes_down"] + tr["bytes_up"] < tr["bytes_naive"]

        after = ok(p, "infer", "--data", "digits")
        assert after["output_dtype"] == "float32" and after["test_accuracy"] > ref_acc - 0.02
        ok(p, "reset")
        assert ok(p, "infer", "--data", "digits")["outputs_sha256"] == inf["outputs_sha256"]


def test_c_training_matches_the_emulator(models, firmware, tmp_path):
    """Same batches, same SGD: the C head ends where edgekd's kernels in the emulator do."""
    args = ["train-last", "--teacher", str(models["teacher"]), "--data", "digits",
            "--epochs", "2", "--batch", "16", "--no-halting"]
    results = []
    with BoardProcess([firmware]) as c_board, \
            BoardProcess(EDGEKD + ["board", "emulate", "--json"]) as emu:
        for i, board in enumerate((c_board, emu)):
            ok(board.port, "deploy", str(models["student"]))
            tr = ok(board.port, *args)
            ok(board.port, "weights", "-o", str(tmp_path / f"w{i}.npz"))
            results.append((tr, np.load(tmp_path / f"w{i}.npz")))
    (c_tr, c_w), (e_tr, e_w) = results
    assert c_tr["loss_before"] == pytest.approx(e_tr["loss_before"], rel=1e-5)
    assert c_tr["loss_after"] == pytest.approx(e_tr["loss_after"], rel=1e-4)
    np.testing.assert_allclose(c_w["W"], e_w["W"], atol=1e-4)
    np.testing.assert_allclose(c_w["bias"], e_w["bias"], atol=1e-4)


def test_c_firmware_refuses_what_does_not_fit(models, firmware, tmp_path):
    small = build_firmware(str(tmp_path), {"EKB_MODEL_SLOT": 4096, "EKB_MAX_WIDTH": 16,
                                           "EKB_BOARD_NAME": "tiny"})
    with BoardProcess([small]) as board:
        r = cli(board.port, "deploy", str(models["teacher_tflite"]))
        one_line_error(r, "do not fit", "4,096-byte model space")
        with commands.connect(board.port) as client:
            with pytest.raises(BoardError, match="model slot") as e:
                commands.deploy(client, models["teacher_tflite"].read_bytes(), check=False)
            assert e.value.code == m.E_NO_FIT
        r = cli(board.port, "deploy", str(models["student"]))
        one_line_error(r, "wider than the firmware's activation arena")
        assert not ok(board.port, "info")["model_loaded"]


def test_c_firmware_runs_dense_int8_models_only(models, firmware):
    sensor = load_dataset("sensor")
    conv = Sequential({"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 5}]}, seed=0)
    conv_path = models["dir"] / "conv.tflite"
    export_tflite(conv, conv_path, int8=True, calib_x=sensor.x_train[:64])
    with pytest.raises(EdgekdError, match="dense"):
        ekb.from_tflite(conv_path.read_bytes())
    with BoardProcess([firmware]) as board:
        one_line_error(cli(board.port, "deploy", str(models["student_f32"])), "int8")
        one_line_error(cli(board.port, "deploy", str(conv_path)), "dense (MLP) models only")


def test_c_firmware_under_faults(models, firmware):
    import serial
    with BoardProcess([firmware]) as board, commands.connect(board.port, timeout=1.0) as client:
        commands.deploy(client, models["student"].read_bytes())
        link = client.link
        link._write(os.urandom(5000))  # longer than any frame: discarded up to a delimiter
        assert commands.info(client).has_model
        # a damaged frame is answered with a NAK for seq 0xFFFF
        wire = bytearray(m.__dict__["SEQ"].pack(7))
        from firmware_bridge.framing import pack
        bad = bytearray(pack(m.INFO, bytes(wire)))
        bad[4] ^= 0x40 if bad[4] != 0x40 else 0x20
        link._write(bytes(bad))
        event = link.recv(time.monotonic() + 2)
        assert event[0] == m.BOARD_ERROR and event[1][:3] == b"\xff\xff\x01"
        # a resent TRAIN_LAST (same seq, same bytes) is replayed, not trained twice
        board_info = commands.info(client)
        dt, rows = commands.encode_inputs(board_info, models["ds"].x_train[:8])
        t = np.zeros((8, 10), np.float32)
        y = models["ds"].y_train[:8]
        w0, _ = commands.get_weights(client)
        seq = client.seq
        first = commands.train_batch(client, board_info, rows, dt, y, t, 0.5, 4.0, 0.9)
        client.seq = seq
        again = commands.train_batch(client, board_info, rows, dt, y, t, 0.5, 4.0, 0.9)
        client.seq += 5
        w_replayed, _ = commands.get_weights(client)
        commands.reset(client)
        commands.train_batch(client, board_info, rows, dt, y, t, 0.5, 4.0, 0.9)
        w_once, _ = commands.get_weights(client)
        assert first[0] == again[0] and not np.array_equal(w0, w_once)
        np.testing.assert_array_equal(w_replayed, w_once)
        with serial.serial_for_url(board.port) as noise:
            noise.write(b"\x00\x05\x05\x05\x00")
        assert commands.info(client).trained
        board.pause()
        client.timeout, client.retries = 0.2, 1
        with pytest.raises(BoardTimeout, match="did not answer INFO after 2 tries"):
            commands.info(client)
        board.resume()
