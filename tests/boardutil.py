"""Running `edgekd board ...` against a board on a pseudo-terminal, as the board tests do, and
the boards themselves: the Python emulator, the C firmware built for this host, and the same
firmware built for Cortex-M and run in QEMU (mps2-an386, M4F; mps2-an385, M3). Tests take a
board kind as a parameter (`board_params`) and start it with the session's `boards` fixture,
which builds each firmware once per session."""

import json
import os
import shutil
import subprocess
import sys

import pytest

EDGEKD = [sys.executable, "-m", "edgekd"]

KINDS = ("emulator", "host-c", "qemu-m4f", "qemu-m3")
QEMU_MACHINES = {"qemu-m4f": "mps2-an386", "qemu-m3": "mps2-an385"}
C_KINDS = ("host-c", "qemu-m4f", "qemu-m3")


def cli(port, *args, timeout=60):
    """The command as a user runs it; `timeout` turns a hang into a test failure."""
    return subprocess.run(EDGEKD + ["board", *args, "--port", port, "--json"],
                          check=False, capture_output=True, text=True, timeout=timeout)


def ok(port, *args, timeout=60):
    r = cli(port, *args, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r, *needles):
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def missing(kind):
    """Why boards of this kind cannot run here (a tool is missing), or None."""
    import importlib.util
    for mod in ("serial", "cobs", "tflite_micro"):
        if importlib.util.find_spec(mod) is None:
            return f"python package {mod} is not installed"
    if kind == "host-c" and shutil.which(os.environ.get("CC", "gcc")) is None:
        return "no C compiler (gcc or $CC)"
    if kind in QEMU_MACHINES:
        for tool, pkg in (("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
                          ("qemu-system-arm", "qemu-system-arm")):
            if shutil.which(tool) is None:
                return f"{tool} not found (apt-get install {pkg})"
    return None


def board_params(*kinds):
    """pytest parameters for these board kinds (all by default), each skipped with the reason
    when its tools are missing."""
    out = []
    for k in kinds or KINDS:
        why = missing(k)
        out.append(pytest.param(k, id=k, marks=pytest.mark.skipif(why is not None,
                                                                  reason=why or "")))
    return out


class Boards:
    """Builds firmware into one directory per session (a build is reused by its hash) and
    starts boards of any kind as BoardProcess."""

    def __init__(self, root):
        self.root = str(root)

    def firmware(self, kind, defines=None, ram=None, sanitize=False, stack=None):
        from firmware_bridge.build import build_firmware
        target = QEMU_MACHINES.get(kind, "host")
        return build_firmware(self.root, defines, target=target, ram=ram, sanitize=sanitize,
                              stack=stack)

    def argv(self, kind, *emulator_args, defines=None, ram=None, sanitize=False, stack=None):
        if kind == "emulator":
            return EDGEKD + ["board", "emulate", "--json", *emulator_args]
        image = self.firmware(kind, defines, ram, sanitize, stack)
        if kind == "host-c":
            return [image]
        return EDGEKD + ["board", "qemu", "--machine", QEMU_MACHINES[kind], "--firmware", image,
                         "--json"]

    def start(self, kind, *emulator_args, defines=None, ram=None, sanitize=False, env=None,
              stack=None):
        from firmware_bridge.launch import BoardProcess
        return BoardProcess(self.argv(kind, *emulator_args, defines=defines, ram=ram,
                                      sanitize=sanitize, stack=stack), env=env)


@pytest.fixture(scope="session")
def boards(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "firmware-builds"
    root.mkdir(exist_ok=True)
    return Boards(root)


def digits_mlp(*hidden):
    layers = [{"type": "dense", "units": h, "activation": "relu"} for h in hidden]
    return {"input_shape": [64], "num_classes": 10,
            "layers": layers + [{"type": "dense", "units": 10}]}


@pytest.fixture(scope="session")
def board_models(tmp_path_factory):
    """A digits int8 student (64-32-16-10), its float32 export, a 64-128-10 teacher (.npz and
    int8 .tflite), trained once per session."""
    from edgekd.data import load_dataset
    from edgekd.distill.supervised import fit
    from edgekd.export import export_tflite
    from edgekd.nn.io import save_model
    from edgekd.nn.model import Sequential
    d = tmp_path_factory.mktemp("board-models")
    ds = load_dataset("digits")
    student = Sequential(digits_mlp(32, 16), seed=0)
    fit(student, ds, epochs=6, batch=32, lr=3e-3)
    teacher = Sequential(digits_mlp(128), seed=1)
    fit(teacher, ds, epochs=10, batch=32, lr=3e-3)
    save_model(d / "teacher.npz", teacher)
    calib = ds.x_train[:256]
    export_tflite(student, d / "student.tflite", int8=True, calib_x=calib)
    export_tflite(student, d / "student_f32.tflite")
    export_tflite(teacher, d / "teacher.tflite", int8=True, calib_x=calib)
    return {"dir": d, "ds": ds, "student": d / "student.tflite",
            "student_f32": d / "student_f32.tflite", "teacher": d / "teacher.npz",
            "teacher_tflite": d / "teacher.tflite"}
