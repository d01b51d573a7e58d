"""What only the C firmware has (on this host and on Cortex-M in QEMU): its compile-time limits
and its model format (EKB: int8 dense and conv1d students, bit for bit TFLM's outputs). The flows every board shares are in
test_board_all.py."""

import pytest

from boardutil import board_models, board_params, boards, cli, ok, one_line_error  # noqa: F401


@pytest.mark.parametrize("kind", board_params("host-c", "qemu-m4f"))
def test_c_firmware_refuses_layers_wider_than_its_buffers(kind, boards, board_models):
    models = board_models
    with boards.start(kind, defines={"EKB_MAX_WIDTH": 16, "EKB_BOARD_NAME": "tiny"}) as board:
        assert ok(board.port, "info")["name"] == "tiny"
        r = cli(board.port, "deploy", str(models["student"]))
        one_line_error(r, "wider than the firmware's activation arena")
        assert not ok(board.port, "info")["model_loaded"]


CONV_STUDENTS = {
    "conv-same-stride-pools-mean": [
        {"type": "conv1d", "filters": 8, "kernel_size": 5, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "maxpool1d", "pool_size": 2},
        {"type": "conv1d", "filters": 8, "kernel_size": 3, "activation": "relu6"},
        {"type": "avgpool1d", "pool_size": 2},
        {"type": "global_avgpool"}, {"type": "dense", "units": 5}],
    "conv-flatten-dense": [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool1d", "pool_size": 3, "stride": 2},
        {"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 5}],
}


@pytest.fixture(scope="module")
def conv_students(tmp_path_factory):
    """Sensor conv1d students exported int8, with TFLM's outputs on the test split."""
    import hashlib

    import numpy as np

    from edgekd.data import load_dataset
    from edgekd.distill.supervised import fit
    from edgekd.export import export_tflite
    from edgekd.export.int8_ref import Int8Model
    from edgekd.export.tflm import run_tflm
    from edgekd.nn.io import save_model
    from edgekd.nn.model import Sequential
    d = tmp_path_factory.mktemp("conv-students")
    ds = load_dataset("sensor")
    out = {}
    for i, (name, layers) in enumerate(CONV_STUDENTS.items()):
        model = Sequential({"input_shape": [64, 3], "num_classes": 5, "layers": layers}, seed=i)
        fit(model, ds, epochs=4, batch=32, lr=3e-3)
        path = d / f"{name}.tflite"
        export_tflite(model, path, int8=True, calib_x=ds.x_train[:256])
        data = path.read_bytes()
        y = run_tflm(data, Int8Model.from_tflite(data).quantize_input(ds.x_test))
        out[name] = (path, hashlib.sha256(y.astype(np.int8).tobytes()).hexdigest(),
                     float(np.mean(y.argmax(axis=1) == ds.y_test)))
    teacher = Sequential({"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 5}]}, seed=7)
    fit(teacher, ds, epochs=8, batch=32, lr=3e-3)
    save_model(d / "teacher.npz", teacher)
    return {"students": out, "teacher": d / "teacher.npz"}


@pytest.mark.parametrize("kind", board_params("host-c", "qemu-m4f", "qemu-m3"))
def test_conv1d_students_run_bit_exact_with_tflm(kind, boards, conv_students, board_models):
    """conv1d (height-1 CONV_2D, SAME and VALID, strided), max and average pools, MEAN and
    RESHAPE, on the C firmware: every int8 output equals TFLM's; the last layer trains."""
    from firmware_bridge import ekb
    with boards.start(kind) as board:
        for name, (path, tflm_sha, tflm_acc) in conv_students["students"].items():
            dep = ok(board.port, "deploy", str(path))
            assert dep["format"] == "ekb" and dep["model_bytes"] == len(
                ekb.from_tflite(path.read_bytes()))
            inf = ok(board.port, "infer", "--data", "sensor")
            assert inf["outputs_sha256"] == tflm_sha, name
            assert inf["test_accuracy"] == tflm_acc
        tr = ok(board.port, "train-last", "--teacher", str(conv_students["teacher"]),
                "--data", "sensor", "--limit", "100", "--epochs", "4", "--holdout", "0",
                "--lr", "0.03", "--lr-decay", "1", "--batch", "10", timeout=180)
        assert tr["loss_after"] < 0.95 * tr["loss_before"], tr  # measured: 0.93


@pytest.mark.parametrize("kind", board_params("host-c", "qemu-m4f"))
def test_c_firmware_refuses_what_it_cannot_run(kind, boards, board_models, tmp_path):
    from edgekd.data import load_dataset
    from edgekd.errors import EdgekdError
    from edgekd.export import export_tflite
    from edgekd.nn.model import Sequential
    from firmware_bridge import ekb
    models = board_models
    sensor = load_dataset("sensor")
    tanh = Sequential({"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "tanh"},
        {"type": "flatten"}, {"type": "dense", "units": 5}]}, seed=0)
    tanh_path = tmp_path / "tanh.tflite"
    export_tflite(tanh, tanh_path, int8=True, calib_x=sensor.x_train[:64])
    with pytest.raises(EdgekdError, match="TANH"):
        ekb.from_tflite(tanh_path.read_bytes())
    with boards.start(kind) as board:
        one_line_error(cli(board.port, "deploy", str(models["student_f32"])), "int8")
        one_line_error(cli(board.port, "deploy", str(tanh_path)), "TANH")
        assert not ok(board.port, "info")["model_loaded"]
