"""The CLI as a user runs it: real processes, --json on stdout, one-line errors, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 20, "activation": "relu"},
                      {"type": "dense", "units": 10}]}
TEACHER = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                      {"type": "dense", "units": 10}]}


def edgekd(*args, check=True, cwd=None):
    p = subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True,
                       check=False, text=True, env=ENV, cwd=cwd, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"edgekd {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def as_json(p):
    out = p.stdout.strip()
    assert out.count("\n") == 0, f"--json printed more than one line: {out!r}"
    return json.loads(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "teacher.json").write_text(json.dumps(TEACHER))
    (d / "student.json").write_text(json.dumps(STUDENT))
    r = as_json(edgekd("teacher", "--spec", d / "teacher.json", "--data", "digits",
                       "--epochs", 8, "--lr", 0.003, "-o", d / "teacher.npz", "--json"))
    assert r["test_accuracy"] > 0.9 and r["params"] == 64 * 64 + 64 + 64 * 10 + 10
    return d


@pytest.mark.parametrize("cmd", ["", "teacher", "design", "train", "eval", "profile", "demo", "data"])
def test_help_explains_every_command(cmd):
    p = edgekd(*([cmd] if cmd else []), "--help")
    assert "Usage:" in p.stdout and len(p.stdout) > 200


def test_design_train_eval_round_trip(files, tmp_path):
    d = as_json(edgekd("design", "--teacher", files / "teacher.npz", "--storage", "8KiB", "--max-fraction", 1,
                       "--ram", "256KiB", "--speed", "50MFLOPS", "--max-latency", "1ms",
                       "-o", tmp_path / "s.json", "--json"))
    assert d["storage_bytes"] <= 8192 and d["binding"] in ("storage", "ram", "latency")
    for key in ("params", "flops", "train_ram_bytes", "latency_s"):
        assert d[key] > 0
    t = as_json(edgekd("train", "--student", tmp_path / "s.json", "--teacher", files / "teacher.npz",
                       "--data", "digits", "--epochs", 5, "--out", tmp_path / "run", "--json"))
    for key in ("test_accuracy", "epochs_run", "epochs_planned", "bytes_down", "bytes_up",
                "bytes_naive_run", "bytes_naive_planned", "settled_fraction", "train_samples_per_s", "peak_rss_mib", "weights_sha256", "wall_s"):
        assert key in t
    e = as_json(edgekd("eval", tmp_path / "run" / "student.npz", "--data", "digits", "--json"))
    assert e["test_accuracy"] == t["test_accuracy"] and e["latency_s"] > 0
    assert e["weights_sha256"] == t["weights_sha256"]


def test_human_output_is_readable(files, tmp_path):
    p = edgekd("train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
               "--data", "digits", "--epochs", 2, "--out", tmp_path / "run")
    assert "test accuracy" in p.stdout and "naive" in p.stdout


BAD_SPECS = {
    "unknown_layer": {"input_shape": [64], "num_classes": 10, "layers": [{"type": "dense9", "units": 10}]},
    "wrong_shape": {"input_shape": [63], "num_classes": 10, "layers": [{"type": "dense", "units": 10}]},
    "bad_units": {"input_shape": [64], "num_classes": 10, "layers": [{"type": "dense", "units": -3}]},
    "not_logits": {"input_shape": [64], "num_classes": 10, "layers": [{"type": "dense", "units": 7}]},
}


def one_line_error(p):
    assert p.returncode != 0
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error:"), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_student_spec_is_one_line_and_writes_nothing(files, tmp_path, name):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(BAD_SPECS[name]))
    p = edgekd("train", "--student", spec, "--teacher", files / "teacher.npz", "--data", "digits",
               "--out", tmp_path / "run", "--json", check=False)
    one_line_error(p)
    assert not (tmp_path / "run").exists()


def write_npz(path, **arrays):
    import numpy as np
    base = {"x_train": np.zeros((20, 64), np.float32), "y_train": np.arange(20) % 10,
            "x_test": np.zeros((10, 64), np.float32), "y_test": np.arange(10) % 10}
    base.update(arrays)
    np.savez(path, **base)


def test_bad_data_and_files_are_one_line(files, tmp_path):
    import numpy as np
    nan = np.zeros((20, 64), np.float32)
    nan[3, 5] = np.nan
    write_npz(tmp_path / "nan.npz", x_train=nan)
    write_npz(tmp_path / "labels.npz", y_test=np.full(10, 10))
    (tmp_path / "trunc.npz").write_bytes((files / "teacher.npz").read_bytes()[:300])
    (tmp_path / "foreign.npz").write_bytes(b"not a zip at all")
    cases = [
        (["--data", tmp_path / "nan.npz"], "NaN"),
        (["--data", tmp_path / "labels.npz"], "class"),
        (["--data", "no-such-set"], "unknown dataset"),
        (["--data", "sensor"], "shape"),
    ]
    for extra, word in cases:
        p = edgekd("train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
                   *extra, "--out", tmp_path / "run", check=False)
        assert word in one_line_error(p), p.stderr
    for bad in ("trunc.npz", "foreign.npz"):
        p = edgekd("train", "--student", files / "student.json", "--teacher", tmp_path / bad,
                   "--data", "digits", "--out", tmp_path / "run", check=False)
        assert bad in one_line_error(p)
        p = edgekd("eval", tmp_path / bad, "--data", "digits", check=False)
        assert bad in one_line_error(p)
    assert not (tmp_path / "run").exists()


def test_nothing_fits_names_the_constraint(files):
    p = edgekd("design", "--teacher", files / "teacher.npz", "--storage", "64B", check=False)
    assert "storage" in one_line_error(p)
    p = edgekd("design", "--teacher", files / "teacher.npz", "--storage", "8 parsecs", check=False)
    one_line_error(p)


def kill_after_epochs(args, run, epochs):
    """Start `edgekd *args --out run`, SIGKILL it once `epochs` metric lines exist; returns the
    metrics file."""
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", *map(str, args), "--out", run],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return metrics


def test_killed_training_resumes_to_the_same_weights(files, tmp_path):
    """SIGKILL a real training process mid-run; --resume must end where a clean run ends."""
    args = ["train", "--student", files / "student.json", "--teacher", files / "teacher.npz",
            "--data", "sensor", "--epochs", 25, "--seed", 3, "--json"]
    spec = {"input_shape": [64, 3], "num_classes": 5,
            "layers": [{"type": "conv1d", "filters": 16, "kernel_size": 5, "activation": "relu"},
                       {"type": "maxpool1d", "pool_size": 2},
                       {"type": "conv1d", "filters": 16, "kernel_size": 3, "activation": "relu"},
                       {"type": "global_avgpool"}, {"type": "dense", "units": 5}]}
    (tmp_path / "conv.json").write_text(json.dumps(spec))
    teacher = as_json(edgekd("teacher", "--spec", tmp_path / "conv.json", "--data", "sensor",
                             "--epochs", 3, "-o", tmp_path / "t.npz", "--json"))
    assert teacher["test_accuracy"] > 0.3
    args[2], args[4], args[6] = tmp_path / "conv.json", tmp_path / "t.npz", "sensor"
    clean = as_json(edgekd(*args, "--out", tmp_path / "clean"))

    run = tmp_path / "killed"
    metrics = kill_after_epochs(args, run, 3)
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < clean["epochs_run"]
    resumed = as_json(edgekd(*args, "--out", run, "--resume"))
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    assert resumed["test_accuracy"] == clean["test_accuracy"]
    assert len(metrics.read_text().splitlines()) == clean["epochs_run"]


def test_demo_makes_its_cache_folder_on_a_fresh_machine(tmp_path, monkeypatch):
    """The quick start's first command on a machine with no ~/.cache/edgekd yet (files are
    written only into folders that exist, so the demo must make its own cache folder)."""
    from edgekd.cli import demo_cmd
    from edgekd.data import load_dataset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    monkeypatch.setattr(demo_cmd, "TEACHER_EPOCHS", 1)
    from edgekd.workflows import cache_dir
    path, cached, result = demo_cmd.cached_teacher(load_dataset("digits"), cache_dir(), seed=0)
    assert not cached and os.path.isfile(path) and result["test_accuracy"] > 0.1
    assert demo_cmd.cached_teacher(load_dataset("digits"), cache_dir(), seed=0)[1]
