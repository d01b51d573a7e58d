"""The board flows on every kind of board: the Python emulator (TFLM inside), the C firmware
built for this host, and the same firmware on a Cortex-M4F and a Cortex-M3 in QEMU. Deploy an
int8 digits student and run it (exactly TFLM's outputs), train its last layer, read it back,
reset; line noise, damaged and resent frames, a board that stops answering, models that do
not fit, bad requests. The QEMU boards carry every byte through an emulated UART, so the
training runs here use a slice of the training split."""

import hashlib
import os
import time

import numpy as np
import pytest

from boardutil import (C_KINDS, QEMU_MACHINES, board_models, board_params, boards, cli,  # noqa: F401
                       ok, one_line_error)

TRAIN_SLICE = 400


def tflm_reference(model_path, ds):
    """TFLM's interpreter on the test split, inputs quantized by edgekd.export."""
    from edgekd.export.int8_ref import Int8Model
    from edgekd.export.tflm import run_tflm
    data = model_path.read_bytes()
    ref = Int8Model.from_tflite(data)
    y = run_tflm(data, ref.quantize_input(ds.x_test))
    np.testing.assert_array_equal(ref.run(ref.quantize_input(ds.x_test)), y)
    return y, float(np.mean(y.argmax(axis=1) == ds.y_test))


def reference_kd_loss(model_path, ds, teacher_path, n):
    """The KD loss of the deployed (dequantized) last layer over the first n training
    samples, from TFLM's features and edgekd's kd_loss: what loss_before must be."""
    from edgekd.distill.losses import kd_loss
    from edgekd.export.int8_ref import Int8Model
    from edgekd.teachers import load_teacher
    from firmware_bridge.emulator.tflm_model import TflmModel
    tm = TflmModel(model_path.read_bytes(), 1 << 20)
    x = Int8Model.from_tflite(model_path.read_bytes()).quantize_input(ds.x_train[:n])
    feats = np.stack([tm.run(r)[1] for r in x])
    t = load_teacher(teacher_path, ds).logits(ds.x_train[:n])
    return kd_loss(tm.head.logits(feats), t, ds.y_train[:n], 4.0, 0.9).loss


@pytest.mark.parametrize("kind", board_params())
def test_deploy_infer_train_weights_reset(kind, boards, board_models, tmp_path):
    from firmware_bridge import ekb
    from firmware_bridge import messages as m
    models = board_models
    ref_y, ref_acc = tflm_reference(models["student"], models["ds"])
    ref_sha = hashlib.sha256(ref_y.astype(np.int8).tobytes()).hexdigest()
    data = models["student"].read_bytes()
    with boards.start(kind) as board:
        p = board.port
        info = ok(p, "info")
        assert info["protocol"] == m.PROTO_VERSION and not info["model_loaded"]
        if kind in QEMU_MACHINES:
            assert info["name"] == QEMU_MACHINES[kind] and info["ram_bytes"] == 256 * 1024

        dep = ok(p, "deploy", str(models["student"]))
        blob = data if kind == "emulator" else ekb.from_tflite(data)
        assert dep["format"] == ("tflite" if kind == "emulator" else "ekb")
        assert dep["model_bytes"] == len(blob)
        assert dep["sha256"] == hashlib.sha256(blob).hexdigest()
        assert 0 < dep["arena_used"] <= info["arena_bytes"]

        inf = ok(p, "infer", "--data", "digits")
        assert inf["output_dtype"] == "int8" and inf["samples"] == len(ref_y)
        assert inf["outputs_sha256"] == ref_sha
        assert inf["test_accuracy"] == ref_acc

        tr = ok(p, "train-last", "--teacher", str(models["teacher"]), "--data", "digits",
                "--epochs", "4", "--limit", str(TRAIN_SLICE), "--lr", "0.05", "--lr-decay", "1",
                "--holdout", "0", timeout=180)
        assert tr["kept"] == "trained" and tr["holdout"] is None
        want = reference_kd_loss(models["student"], models["ds"], models["teacher"],
                                 TRAIN_SLICE)
        assert tr["loss_before"] == pytest.approx(want, rel=1e-4)
        assert tr["loss_after"] < 0.8 * tr["loss_before"], tr
        assert 0 < tr["bytes_down"] + tr["bytes_up"] < tr["bytes_naive_run"]  # halting saved bytes

        after = ok(p, "infer", "--data", "digits")
        assert after["output_dtype"] == "float32" and after["head_trained"]
        assert after["test_accuracy"] > ref_acc - 0.03

        w = ok(p, "weights", "-o", str(tmp_path / "last.npz"))
        arrays = np.load(tmp_path / "last.npz")
        assert w["shape"] == [10, 16] and arrays["kernel"].shape == (16, 10)
        assert np.isfinite(arrays["W"]).all()

        ok(p, "reset")
        assert ok(p, "infer", "--data", "digits")["outputs_sha256"] == ref_sha


@pytest.mark.parametrize("kind", board_params("host-c", "qemu-m4f", "qemu-m3"))
def test_c_training_matches_the_emulator(kind, boards, board_models):
    """Same batches, same SGD on the KD loss: the C head (x86, M4F hard float, M3 soft float)
    ends where edgekd's kernels in the emulator do."""
    from edgekd.teachers import load_teacher
    from firmware_bridge import commands
    ds = board_models["ds"]
    n, batch = 320, 16
    t = load_teacher(board_models["teacher"], ds).logits(ds.x_train[:n])
    results = []
    with boards.start(kind) as c_board, boards.start("emulator") as emu:
        for board in (c_board, emu):
            with commands.connect(board.port, timeout=5) as client:
                commands.deploy(client, board_models["student"].read_bytes())
                b = commands.info(client)
                dt, rows = commands.encode_inputs(b, ds.x_train[:n])
                losses = []
                for epoch in range(2):
                    for i in range(0, n, batch):
                        s = slice(i, i + batch)
                        loss, kl, agree = commands.train_batch(
                            client, b, rows[s], dt, ds.y_train[s], t[s], 0.05, 4.0, 0.9)
                        losses.append((loss, kl, agree))
                results.append((losses, commands.get_weights(client)))
    (c_steps, (c_w, c_b)), (e_steps, (e_w, e_b)) = results
    assert len(c_steps) == 40
    for (cl, ckl, cag), (el, ekl, eag) in zip(c_steps, e_steps):
        assert cl == pytest.approx(el, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(ckl, ekl, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(c_w, e_w, atol=1e-4)
    np.testing.assert_allclose(c_b, e_b, atol=1e-4)


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f"))
def test_noise_damaged_and_resent_frames(kind, boards, board_models):
    """Garbage longer than any frame is discarded up to a delimiter; a damaged frame gets a
    NAK; a resent TRAIN_LAST (same seq, same bytes) is replayed, not trained twice."""
    import serial

    from firmware_bridge import commands
    from firmware_bridge import messages as m
    from firmware_bridge.framing import pack
    ds = board_models["ds"]
    with boards.start(kind) as board, commands.connect(board.port, timeout=2.0) as client:
        commands.deploy(client, board_models["student"].read_bytes())
        client.link._write(os.urandom(5000))
        assert commands.info(client).has_model
        bad = bytearray(pack(m.INFO, m.SEQ.pack(7)))
        bad[4] ^= 0x40 if bad[4] != 0x40 else 0x20
        client.link._write(bytes(bad))
        event = client.link.recv(time.monotonic() + 3)
        assert event[0] == m.BOARD_ERROR and event[1][:3] == b"\xff\xff\x01"

        b = commands.info(client)
        dt, rows = commands.encode_inputs(b, ds.x_train[:8])
        t = np.zeros((8, 10), np.float32)
        y = ds.y_train[:8]
        w0, _ = commands.get_weights(client)
        seq = client.seq
        first = commands.train_batch(client, b, rows, dt, y, t, 0.5, 4.0, 0.9)
        client.seq = seq
        again = commands.train_batch(client, b, rows, dt, y, t, 0.5, 4.0, 0.9)
        client.seq += 5
        w_replayed, _ = commands.get_weights(client)
        commands.reset(client)
        commands.train_batch(client, b, rows, dt, y, t, 0.5, 4.0, 0.9)
        w_once, _ = commands.get_weights(client)
        assert first[0] == again[0] and not np.array_equal(w0, w_once)
        np.testing.assert_array_equal(w_replayed, w_once)
        with serial.serial_for_url(board.port) as noise:
            noise.write(b"\x00\x05\x05\x05\x00" + os.urandom(300) + b"\x00")
        assert commands.info(client).trained
        y_after, _ = commands.infer(client, ds.x_test[:20])
        assert y_after.shape == (20, 10) and np.isfinite(y_after).all()


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f"))
def test_a_board_that_stops_answering_times_out_with_one_line(kind, boards):
    with boards.start(kind) as board:
        ok(board.port, "info")
        board.pause()
        try:
            r = cli(board.port, "info", "--timeout", "0.3", "--retries", "2", timeout=30)
            one_line_error(r, "did not answer INFO after 3 tries")
        finally:
            board.resume()
        assert ok(board.port, "info")["protocol"] == 1


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f"))
def test_bad_requests_are_one_line_errors(kind, boards, tmp_path):
    with boards.start(kind) as board:
        one_line_error(cli(board.port, "infer", "--data", "digits"), "no model")
        one_line_error(cli(board.port, "weights", "-o", str(tmp_path / "w.npz")), "no model")
        junk = tmp_path / "junk.tflite"
        junk.write_bytes(b"not a model at all")
        one_line_error(cli(board.port, "deploy", str(junk)), "junk.tflite")
        assert not (tmp_path / "w.npz").exists()
        assert not ok(board.port, "info")["model_loaded"]


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f"))
def test_a_model_that_does_not_fit_is_refused_by_host_and_board(kind, boards, board_models):
    from firmware_bridge import commands
    from firmware_bridge import messages as m
    from firmware_bridge.protocol import BoardError
    if kind == "emulator":
        space, start = 4000, lambda: boards.start(kind, "--flash", str(512 * 1024 + 4000))
    else:
        space, start = 4096, lambda: boards.start(kind, defines={"EKB_MODEL_SLOT": 4096})
    with start() as board:
        r = cli(board.port, "deploy", str(board_models["teacher_tflite"]))
        one_line_error(r, "do not fit", f"{space:,}-byte model space")
        with commands.connect(board.port) as client:
            with pytest.raises(BoardError) as e:
                commands.deploy(client, board_models["teacher_tflite"].read_bytes(),
                                check=False)
            assert e.value.code == m.E_NO_FIT
            assert not commands.info(client).has_model


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f"))
def test_train_last_never_leaves_the_board_worse(kind, boards, board_models):
    """With a rate that wrecks the layer, the held-out slice says so and the deployed layer
    stays (int8 outputs bit for bit); with the defaults, test accuracy improves or holds."""
    from firmware_bridge.train_last import holdout_split
    models = board_models
    ref_y, ref_acc = tflm_reference(models["student"], models["ds"])
    ref_sha = hashlib.sha256(ref_y.astype(np.int8).tobytes()).hexdigest()
    args = ["train-last", "--teacher", str(models["teacher"]), "--data", "digits",
            "--limit", str(TRAIN_SLICE), "--epochs", "2"]
    with boards.start(kind) as board:
        p = board.port
        ok(p, "deploy", str(models["student"]))
        wrecked = ok(p, *args, "--lr", "500", "--lr-decay", "1", timeout=180)
        assert wrecked["kept"] == "before", wrecked
        h = wrecked["holdout"]
        held, _ = holdout_split(TRAIN_SLICE, 0.2, 0)
        assert h["samples"] == len(held) == 80
        assert (h["accuracy_after"], h["kd_loss_after"]) == (h["accuracy_before"],
                                                             h["kd_loss_before"])
        assert wrecked["loss_after"] == pytest.approx(wrecked["loss_before"], rel=1e-6)
        inf = ok(p, "infer", "--data", "digits")
        assert inf["outputs_sha256"] == ref_sha and not inf["head_trained"]

        tr = ok(p, *args, timeout=180)
        h = tr["holdout"]
        assert h["accuracy_after"] >= h["accuracy_before"]
        if tr["kept"] != "before":
            assert (h["accuracy_after"] > h["accuracy_before"]
                    or h["kd_loss_after"] < h["kd_loss_before"])
        assert ok(p, "infer", "--data", "digits")["test_accuracy"] >= ref_acc - 1 / 359
