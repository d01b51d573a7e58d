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


@pytest.mark.parametrize("command", [
    ["board", "train", "--student", "FIVE", "--teacher", "TEACHER", "--data", "digits"],
    ["board", "bench", "--train-student", "FIVE", "--teacher", "TEACHER", "--data", "digits"],
    ["board", "bench", "--train-student", "STUDENT", "--data", "sensor"],
])
def test_board_training_checks_student_teacher_and_data_before_dialing(files, tmp_path, command):
    """/dev/null is no board: the error must be the mismatch, found before the port is opened."""
    five = {**STUDENT, "num_classes": 5,
            "layers": [STUDENT["layers"][0], {"type": "dense", "units": 5}]}
    (tmp_path / "five.json").write_text(json.dumps(five))
    paths = {"FIVE": tmp_path / "five.json", "TEACHER": files / "teacher.npz",
             "STUDENT": files / "student.json"}
    p = edgekd(*[paths.get(a, a) for a in command], "--port", "/dev/null", check=False)
    one_line_error(p, "classes" if "FIVE" in command else "[64, 3]")


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


# -- 10: hostile and oversized inputs ---------------------------------------------------------
def peak_kib(p):
    return int(p.stderr.strip().splitlines()[-1])


def edgekd_measured(*args, cwd=None):
    """edgekd in a child whose peak RSS (KiB, from wait4) is printed as stderr's last line."""
    code = ("import os, sys, subprocess\n"
            "p = subprocess.Popen([sys.executable, '-m', 'edgekd', *sys.argv[1:]])\n"
            "_, status, ru = os.wait4(p.pid, 0)\n"
            "print(ru.ru_maxrss, file=sys.stderr)\n"
            "sys.exit(os.waitstatus_to_exitcode(status))")
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=ENV, cwd=cwd, timeout=120, check=False)
    err = "\n".join(p.stderr.strip().splitlines()[:-1])
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout, err), peak_kib(p)


BOUNDED_KIB = 400 * 1024   # python + numpy + numba imported, and nothing else


@pytest.mark.parametrize("name,spec,words", [
    ("wide", {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 10_000_000}, {"type": "dense", "units": 10}]}, ["weights"]),
    ("deep", {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dropout", "rate": 0.1}] * 20_000 + [{"type": "dense", "units": 10}]},
     ["20,001 layers"]),
    ("huge-input", {"input_shape": [100_000, 100_000, 3], "num_classes": 10, "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 10}]}, ["elements per sample"]),
])
def test_oversized_specs_are_refused_before_memory_is_spent(files, tmp_path, name, spec, words):
    (tmp_path / "s.json").write_text(json.dumps(spec))
    p, kib = edgekd_measured("train", "--student", tmp_path / "s.json", "--teacher",
                             files / "teacher.npz", "--data", "digits", "--out", tmp_path / "run")
    one_line_error(p, *words)
    assert kib < BOUNDED_KIB


def test_the_weight_limit_is_a_flag(files, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(STUDENT))
    p = edgekd("--max-params", 1000, "train", "--student", tmp_path / "s.json", "--teacher",
               files / "teacher.npz", "--data", "digits", "--out", tmp_path / "run", check=False)
    one_line_error(p, "1,000 weights", "--max-params")


def test_deeply_nested_json_is_one_line(tmp_path):
    (tmp_path / "s.json").write_text("[" * 100_000 + "]" * 100_000)
    p = edgekd("train", "--student", tmp_path / "s.json", "--teacher", tmp_path / "s.json",
               "--data", "digits", "--out", tmp_path / "run", check=False)
    one_line_error(p, "nested too deeply")


def _npz_with_header(path, key_shapes, payload=b"\0" * 100, deflate=False, big=None):
    """An .npz whose members' .npy headers claim `key_shapes`; `big` (key, bytes) streams that
    many zero bytes into one member (a zip bomb when deflated)."""
    import io
    import zipfile
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as z:
        for key, (shape, descr) in key_shapes.items():
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                head, {"descr": descr, "fortran_order": False, "shape": shape})
            with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                f.write(head.getvalue())
                if big and big[0] == key:
                    chunk = b"\0" * (1 << 22)
                    for _ in range(big[1] // len(chunk)):
                        f.write(chunk)
                    f.write(chunk[:big[1] % len(chunk)])
                else:
                    f.write(payload[:int(np.prod(shape)) * np.dtype(descr).itemsize])
    return path


def _labels(n=3):
    return ((n,), "<i8")


@pytest.mark.parametrize("kind", ["lying-header", "zip-bomb", "object-array"])
def test_hostile_data_npz_is_refused_in_bounded_memory(tmp_path, kind):
    if kind == "lying-header":      # 400 GiB claimed, 100 bytes present
        members = {"x_train": ((100 << 30, 1), "<f4"), "y_train": _labels(), "x_test":
                   ((3, 1), "<f4"), "y_test": _labels()}
        path, words = _npz_with_header(tmp_path / "d.npz", members), ["claims shape"]
    elif kind == "zip-bomb":        # 330 MB of zeros in about 320 kB
        rows = 20_000
        members = {"x_train": ((rows, 4096), "<f4"), "y_train": _labels(), "x_test":
                   ((3, 4096), "<f4"), "y_test": _labels()}
        path = _npz_with_header(tmp_path / "d.npz", members, deflate=True,
                                big=("x_train", rows * 4096 * 4))
        words = ["zip bomb"]
    else:
        members = {"x_train": ((3, 1), "|O"), "y_train": _labels(), "x_test": ((3, 1), "<f4"),
                   "y_test": _labels()}
        path, words = _npz_with_header(tmp_path / "d.npz", members), ["pickle"]
    p, kib = edgekd_measured("data", path)
    one_line_error(p, *words)
    assert kib < BOUNDED_KIB
    p, kib = edgekd_measured("--max-data", "8GiB", "data", path)   # past the limit, still safe
    one_line_error(p, *words)
    assert kib < BOUNDED_KIB


@pytest.mark.parametrize("kind", ["npz-lying-header", "npz-zip-bomb", "npy-lying-header",
                                  "npy-truncated"])
def test_hostile_teacher_files_are_refused_in_bounded_memory(files, tmp_path, kind):
    """A teacher's weights (.npz) or precomputed logits (.npy) whose header claims 400 GiB, a
    deflated member of 330 MB of zeros, a .npy cut short: one line, before memory is spent."""
    import io
    import zipfile
    big = ((100 << 30, 1), "<f4")
    if kind.startswith("npz"):
        path, key = tmp_path / "t.npz", "layers.0.kernel"
        mode = zipfile.ZIP_DEFLATED if kind == "npz-zip-bomb" else zipfile.ZIP_STORED
        with zipfile.ZipFile(files / "teacher.npz") as src, zipfile.ZipFile(path, "w", mode) as z:
            for info in src.infolist():
                if info.filename != f"{key}.npy":
                    z.writestr(info.filename, src.read(info))
                    continue
                rows = 20_000 if kind == "npz-zip-bomb" else 100 << 30
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    head, {"descr": "<f4", "fortran_order": False, "shape": (rows, 4096)})
                with z.open(info.filename, "w", force_zip64=True) as f:
                    f.write(head.getvalue())
                    for _ in range(rows * 4096 * 4 >> 22 if kind == "npz-zip-bomb" else 0):
                        f.write(b"\0" * (1 << 22))
        args, words = ["eval", path, "--data", "digits"], \
            ["more than the limit" if kind == "npz-zip-bomb" else "claims shape"]
    else:
        path = tmp_path / "logits.npy"
        head = io.BytesIO()
        shape = big[0] if kind == "npy-lying-header" else (1438, 10)
        np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                    "shape": shape})
        path.write_bytes(head.getvalue() + b"\0" * 100)
        args, words = ["train", "--student", files / "student.json", "--teacher", path, "--data",
                       "digits", "--out", tmp_path / "run"], ["claims shape"]
    p, kib = edgekd_measured(*args)
    one_line_error(p, *words)
    assert kib < BOUNDED_KIB
    assert not (tmp_path / "run").exists()


def test_teacher_npz_with_a_foreign_member_or_complex_weights_is_refused(files, tmp_path):
    arrays = dict(np.load(files / "teacher.npz"))
    np.savez(tmp_path / "extra.npz", **arrays, payload=np.zeros(10))
    p = edgekd("eval", tmp_path / "extra.npz", "--data", "digits", check=False)
    one_line_error(p, "unexpected member 'payload'")
    key = next(k for k in arrays if k.endswith(".kernel"))
    np.savez(tmp_path / "complex.npz", **{**arrays, key: arrays[key].astype(np.complex64)})
    p = edgekd("eval", tmp_path / "complex.npz", "--data", "digits", check=False)
    one_line_error(p, "complex64", "real")
    np.savez(tmp_path / "future.npz", **{**arrays, "edgekd_format": np.array(99, np.int32)})
    p = edgekd("eval", tmp_path / "future.npz", "--data", "digits", check=False)
    one_line_error(p, "format 99")


# -- 5: eval reads .tflite ------------------------------------------------------------------
def test_eval_runs_exported_tflite_models_in_tflm(files, tmp_path):
    pytest.importorskip("tflite_micro")
    from edgekd.data import load_dataset
    from edgekd.export.int8_ref import Int8Model
    ds = load_dataset("digits")
    npz = as_json(edgekd("eval", files / "teacher.npz", "--data", "digits", "--json"))
    edgekd("export", files / "teacher.npz", "-o", tmp_path / "f.tflite")
    f32 = as_json(edgekd("eval", tmp_path / "f.tflite", "--data", "digits", "--json"))
    assert f32["int8"] is False and abs(f32["test_accuracy"] - npz["test_accuracy"]) <= 0.003
    edgekd("export", files / "teacher.npz", "--int8", "--calib", "digits", "-o", tmp_path / "q.tflite")
    q8 = as_json(edgekd("eval", tmp_path / "q.tflite", "--data", "digits", "--json"))
    ref = Int8Model.from_tflite((tmp_path / "q.tflite").read_bytes())   # the bit-exact reference
    want = float((ref.run(ref.quantize_input(ds.x_test)).argmax(1) == ds.y_test).mean())
    assert q8["int8"] is True and q8["test_accuracy"] == want and q8["samples"] == len(ds.y_test)
    p = edgekd("eval", tmp_path / "q.tflite", "--data", "sensor", check=False)
    one_line_error(p, "[64, 3]")


@pytest.mark.parametrize("name,content,words", [
    ("spec.json", b"{}", ["expected an edgekd model .npz or a .tflite"]),
    ("junk.npz", b"junk", ["not an .npz archive", "edgekd model"]),
    ("junk.tflite", b"junk" * 10, ["not a TFLite flatbuffer"]),
    ("torn.tflite", b"\x1c\x00\x00\x00TFL3", ["TFLM"]),
])
def test_eval_of_a_file_it_cannot_read_names_what_it_expected(tmp_path, name, content, words):
    pytest.importorskip("tflite_micro")
    (tmp_path / name).write_bytes(content)
    one_line_error(edgekd("eval", tmp_path / name, "--data", "digits", check=False), *words)


# -- 6, 7, 11: saved bytes, resume, interrupt, torn metrics ----------------------------------
def test_saved_is_reported_against_the_epochs_run_and_the_epochs_planned(files, tmp_path):
    r = as_json(edgekd("train", "--student", files / "student.json", "--teacher",
                       files / "teacher.npz", "--data", "digits", "--epochs", 40, "--rho", 0.5,
                       "--out", tmp_path / "run", "--json"))
    assert r["epochs_run"] < r["epochs_planned"] == 40          # halted early by rho
    per_epoch = r["bytes_naive_planned"] / 40
    assert r["bytes_naive_run"] == pytest.approx(per_epoch * r["epochs_run"])
    rep = as_json(edgekd("report", tmp_path / "run", "--json"))["summary"]
    assert rep["bytes_naive_run"] == r["bytes_naive_run"]
    assert rep["bytes_naive_planned"] == r["bytes_naive_planned"]
    link = r["bytes_down"] + r["bytes_up"]
    # the report reads the last epoch's line, before STOP and its answer crossed the link
    assert rep["bytes_saved_fraction_run"] == pytest.approx(1 - link / r["bytes_naive_run"], abs=1e-3)
    assert rep["bytes_saved_fraction_planned"] > rep["bytes_saved_fraction_run"]
    text = edgekd("train", "--student", files / "student.json", "--teacher",
                  files / "teacher.npz", "--data", "digits", "--epochs", 40, "--rho", 0.5,
                  "--out", tmp_path / "run2").stdout
    assert f"for the {r['epochs_run']} epochs run" in text and "vs the 40 planned" in text


def test_resume_names_the_flags_its_checkpoint_overrides(files, tmp_path):
    base = ["train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
            "--data", "digits", "--out", tmp_path / "run"]
    edgekd(*base, "--epochs", 2)
    p = edgekd(*base, "--epochs", 50, "--lr", 0.1, "--policy", "skip", "--resume", "--json")
    assert "--epochs 50 (the run has 2)" in p.stderr and "--lr 0.1 (the run has 0.01)" in p.stderr
    assert "--policy skip (the run has rehearse)" in p.stderr
    assert as_json(p)["epochs_run"] == 2


@pytest.mark.parametrize("how", ["ctrl-c", "background-sigint", "sigterm"])
def test_ctrl_c_says_how_to_resume_and_leaves_a_usable_student(files, tmp_path, how):
    """Ctrl-C, kill -INT of a background job (a shell starts it with SIGINT ignored) and
    SIGTERM (`kill %1`) all stop the run the same way."""
    import os
    import signal
    import time
    out = tmp_path / "run"
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) \
        if how == "background-sigint" else None
    p = subprocess.Popen([sys.executable, "-m", "edgekd", "train", "--student",
                          str(files / "student.json"), "--teacher", str(files / "teacher.npz"),
                          "--data", "digits", "--epochs", "500", "--no-halting", "--out", str(out),
                          "--backend", "numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV, preexec_fn=ignore_sigint)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "--resume" in err and "Traceback" not in err, err
    e = as_json(edgekd("eval", out / "student.npz", "--data", "digits", "--json"))
    assert e["test_accuracy"] > 0.5
    edgekd("export", out / "student.npz", "-o", tmp_path / "s.tflite")
    assert os.path.getsize(tmp_path / "s.tflite") > 0


def test_a_torn_last_metrics_line_does_not_block_resume_or_report(files, tmp_path):
    base = ["train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
            "--data", "digits", "--out", tmp_path / "run", "--no-halting"]
    edgekd(*base, "--epochs", 3)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + "\n" + lines[-1][:25])     # power cut mid-append
    rep = as_json(edgekd("report", tmp_path / "run", "--json"))
    assert len(rep["epochs"]) == rep["summary"]["epochs"] == 3
    r = as_json(edgekd(*base, "--epochs", 3, "--resume", "--json"))
    assert r["epochs_run"] == 3
    assert len(metrics.read_text().splitlines()) == 3


# -- 8: files and units ----------------------------------------------------------------------
def test_outputs_get_the_users_umask_and_no_folder_is_made(files, tmp_path):
    import os
    import stat
    code = ("import os, sys; os.umask(0o027); from edgekd.cli import main; "
            "sys.argv[0] = 'edgekd'; main()")

    def run(*args):
        p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                           text=True, env=ENV, timeout=300, check=False)
        assert p.returncode == 0, p.stderr
    run("train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
        "--data", "digits", "--epochs", 1, "--out", tmp_path / "run")
    run("export", tmp_path / "run" / "student.npz", "--format", "c", "-o", tmp_path / "m.h")
    run("export", tmp_path / "run" / "student.npz", "-o", tmp_path / "m.tflite")
    for f in ("run/student.npz", "run/checkpoint.npz", "run/metrics.jsonl", "m.h", "m.cc",
              "m.tflite"):
        assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o640, f
    p = edgekd("export", tmp_path / "run" / "student.npz", "-o", tmp_path / "no" / "dir" / "x.tflite",
               check=False)
    one_line_error(p, "no such directory")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("args", [
    ["board", "emulate", "--ram", "64KiB", "--flash", "1MiB", "--arena", "8KiB"],
    ["train", "--byte-budget", "2MB", "--time-budget", "600s", "--cache-budget", "64KiB",
     "--timeout", "30s"],
    ["serve", "--idle-timeout", "90s", "--handshake-timeout", "2500ms", "--frame-timeout", "30s"],
    ["board", "info", "--timeout", "500ms"],
])
def test_size_options_take_units(args):
    """Parsed before anything runs: a wrong unit is a usage error naming the option."""
    p = edgekd(*args, "--help", check=False)
    assert p.returncode == 0
    bad = [a if not a[0].isdigit() else "12XB" for a in args]
    p = edgekd(*bad, check=False)
    assert p.returncode == 2 and "unknown unit 'XB'" in p.stderr and "Traceback" not in p.stderr


def emulator(*args):
    from boardutil import EDGEKD

    from firmware_bridge.launch import BoardProcess
    return BoardProcess(EDGEKD + ["board", "emulate", "--json", *args])


def test_board_emulate_takes_ram_in_kib():
    pytest.importorskip("serial")
    pytest.importorskip("tflite_micro")
    with emulator("--profile", "nrf52840", "--ram", "96KiB") as board:
        info = as_json(edgekd("board", "info", "--port", board.port, "--json"))
    assert info["ram_bytes"] == 96 * 1024


def test_export_that_does_not_fit_the_board_fails_unless_allowed(tmp_path):
    pytest.importorskip("tflite_micro")
    wide = {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 2048, "activation": "relu"}, {"type": "dense", "units": 10}]}
    (tmp_path / "w.json").write_text(json.dumps(wide))
    edgekd("teacher", "--spec", tmp_path / "w.json", "--data", "digits", "--epochs", 1,
           "-o", tmp_path / "w.npz")
    p = edgekd("export", tmp_path / "w.npz", "--profile", "nrf52840", "-o", tmp_path / "w.tflite",
               check=False)
    one_line_error(p, "does not fit nrf52840", "--allow-misfit")
    assert not (tmp_path / "w.tflite").exists()
    r = as_json(edgekd("export", tmp_path / "w.npz", "--profile", "nrf52840", "--allow-misfit",
                       "-o", tmp_path / "w.tflite", "--json"))
    assert r["board"]["fits"] is False and (tmp_path / "w.tflite").exists()


# -- 9: designer, export and boards agree on what fits ----------------------------------------
BIG_TEACHER = {"input_shape": [64], "num_classes": 10, "layers": [
    {"type": "dense", "units": 1024, "activation": "relu"},
    {"type": "dense", "units": 512, "activation": "relu"}, {"type": "dense", "units": 10}]}


@pytest.fixture(scope="module")
def big_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    (d / "t.json").write_text(json.dumps(BIG_TEACHER))
    edgekd("teacher", "--spec", d / "t.json", "--data", "digits", "--epochs", 1, "-o", d / "t.npz")
    return d / "t.npz"


@pytest.mark.parametrize("profile", ["nrf52840", "esp32-s3", "stm32f746"])
def test_what_the_designer_sizes_for_a_board_deploys_to_it(big_teacher, tmp_path, profile):
    pytest.importorskip("serial")
    pytest.importorskip("tflite_micro")
    d = as_json(edgekd("design", "--teacher", big_teacher, "--profile", profile,
                       "--max-fraction", 1, "-o", tmp_path / "s.json", "--json"))
    edgekd("train", "--student", tmp_path / "s.json", "--teacher", big_teacher, "--data",
           "digits", "--epochs", 1, "--out", tmp_path / "run", "--no-halting")
    e = as_json(edgekd("export", tmp_path / "run" / "student.npz", "--int8", "--calib", "digits",
                       "--profile", profile, "-o", tmp_path / "s.tflite", "--json"))
    assert e["board"]["fits"], e["board"]
    assert e["model_bytes"] <= d["constraints"]["storage_bytes"] == e["board"]["model_flash_bytes"]
    with emulator("--profile", profile) as board:
        dep = edgekd("board", "deploy", tmp_path / "s.tflite", "--port", board.port, "--json",
                     check=False)
    assert dep.returncode == 0, dep.stderr


def test_a_profile_alone_sizes_a_student_not_the_teacher(big_teacher):
    d = as_json(edgekd("design", "--teacher", big_teacher, "--profile", "esp32-s3", "--json"))
    assert d["binding"] == "size" and d["params"] <= 0.25 * d["teacher_params"]
    whole = as_json(edgekd("design", "--teacher", big_teacher, "--profile", "esp32-s3",
                           "--max-fraction", 1, "--json"))
    assert whole["params"] == whole["teacher_params"] and whole["binding"] == "none"


def test_a_family_design_does_not_speak_of_a_teacher():
    p = edgekd("design", "--family", "mlp", "--data", "digits", "--storage", "8KiB")
    assert "teacher" not in p.stdout and "template" in p.stdout


# -- 12: the report's plot on a short run -----------------------------------------------------
def test_accuracy_ticks_read_differently_on_a_narrow_range():
    pytest.importorskip("matplotlib")
    from matplotlib.ticker import PercentFormatter

    from edgekd.report import _percent_decimals
    acc = [0.9412, 0.9427, 0.9431]
    fmt = PercentFormatter(decimals=_percent_decimals(acc))
    ticks = [94.1, 94.2, 94.3]
    labels = [fmt.format_pct(t, 100) for t in ticks]
    assert len(set(labels)) == len(labels), labels
    assert _percent_decimals([0.5, 0.9]) == 0
