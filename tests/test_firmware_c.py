"""What only the C firmware has (on this host and on Cortex-M in QEMU): its compile-time limits
and its model format (int8 dense models as EKB). The flows every board shares are in
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


@pytest.mark.parametrize("kind", board_params("host-c", "qemu-m4f"))
def test_c_firmware_runs_dense_int8_models_only(kind, boards, board_models):
    from edgekd.data import load_dataset
    from edgekd.errors import EdgekdError
    from edgekd.export import export_tflite
    from edgekd.nn.model import Sequential
    from firmware_bridge import ekb
    models = board_models
    sensor = load_dataset("sensor")
    conv = Sequential({"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 5}]}, seed=0)
    conv_path = models["dir"] / "conv.tflite"
    export_tflite(conv, conv_path, int8=True, calib_x=sensor.x_train[:64])
    with pytest.raises(EdgekdError, match="dense"):
        ekb.from_tflite(conv_path.read_bytes())
    with boards.start(kind) as board:
        one_line_error(cli(board.port, "deploy", str(models["student_f32"])), "int8")
        one_line_error(cli(board.port, "deploy", str(conv_path)), "dense (MLP) models only")
