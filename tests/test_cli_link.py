"""The two roles as real processes: `edgekd serve` and `edgekd train --connect` over loopback."""

import json
import os
import signal
import subprocess
import sys

import pytest
from linkutil import TOKEN
from test_cli import (
    ENV,
    STUDENT,
    TEACHER,
    as_json,
    edgekd,
    kill_after_epochs,
    one_line_error,
)


class Serve:
    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekd", "serve", *map(str, args),
                                      "--bind", "127.0.0.1:0", "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        info = json.loads(self.proc.stdout.readline())
        self.connect = f"{info['host']}:{info['port']}"

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("link")
    (d / "teacher.json").write_text(json.dumps(TEACHER))
    (d / "student.json").write_text(json.dumps(STUDENT))
    edgekd("teacher", "--spec", d / "teacher.json", "--data", "digits", "--epochs", 6,
           "-o", d / "teacher.npz")
    return d


def test_serve_and_connect_match_the_in_process_run(files, tmp_path):
    host = Serve("--teacher", files / "teacher.npz", "--data", "digits", "--token", TOKEN)
    try:
        common = ["train", "--student", files / "student.json", "--epochs", 10, "--json"]
        remote = as_json(edgekd(*common, "--connect", host.connect, "--token", TOKEN,
                                "--out", tmp_path / "remote"))
        p = edgekd(*common, "--connect", host.connect, "--token", "nope", "--out",
                   tmp_path / "refused", check=False)
        assert "authentication failed" in one_line_error(p)
        local = as_json(edgekd(*common, "--teacher", files / "teacher.npz", "--data", "digits",
                               "--out", tmp_path / "local"))
    finally:
        code, log = host.stop()
    assert remote["weights_sha256"] == local["weights_sha256"]
    assert remote["bytes_down"] == local["bytes_down"] - 1   # WELCOME auth true, not false
    assert remote["bytes_up"] == local["bytes_up"] + 64 + 2 - 4  # HMAC hex "..." instead of null
    assert code == 0 and "Traceback" not in log
    lines = [line for line in log.splitlines() if " B down" in line]
    assert len(lines) == 2 and "stop: " in lines[0] and "authentication failed" in lines[1]
    assert log.strip().endswith("stopped")


def test_naive_baseline_and_default_bytes(files, tmp_path):
    host = Serve("--teacher", files / "teacher.npz", "--data", "digits")
    try:
        common = ["train", "--student", files / "student.json", "--epochs", 10, "--json",
                  "--connect", host.connect]
        naive = as_json(edgekd(*common, "--no-halting", "--codec", "f32", "--cache-budget", 0,
                              "--out", tmp_path / "n"))
        default = as_json(edgekd(*common, "--backend", "numpy", "--out", tmp_path / "d"))
    finally:
        host.stop()
    assert default["peak_rss_mib"] < 64  # the device process, numpy backend, on digits
    assert naive["bytes_down"] + naive["bytes_up"] >= naive["bytes_naive_run"]
    assert default["bytes_down"] + default["bytes_up"] <= 0.2 * naive["bytes_naive_planned"]


def test_killed_device_resumes_from_its_checkpoint_against_the_server(files, tmp_path):
    host = Serve("--teacher", files / "teacher.npz", "--data", "digits")
    try:
        args = ["train", "--student", files / "student.json", "--epochs", 40, "--rho", 1.0,
                "--patience-epochs", 40, "--json", "--connect", host.connect]
        clean = as_json(edgekd(*args, "--out", tmp_path / "clean"))
        run = tmp_path / "killed"
        kill_after_epochs(args, run, 3)
        resumed = as_json(edgekd(*args, "--out", run, "--resume"))
    finally:
        host.stop()
    assert resumed["weights_sha256"] == clean["weights_sha256"]


def test_a_token_the_host_does_not_ask_for_is_reported(files, tmp_path):
    host = Serve("--teacher", files / "teacher.npz", "--data", "digits")
    try:
        p = edgekd("train", "--student", files / "student.json", "--epochs", 1, "--connect",
                   host.connect, "--token", TOKEN, "--out", tmp_path / "r", "--json")
    finally:
        host.stop()
    assert "does not ask for a token" in p.stderr and as_json(p)["epochs_run"] == 1


def test_connect_to_nothing_fails_fast_with_one_line(files, tmp_path):
    p = edgekd("train", "--student", files / "student.json", "--connect", "127.0.0.1:1",
               "--retries", 0, "--out", tmp_path / "r", check=False)
    assert "cannot connect" in one_line_error(p)
    assert not (tmp_path / "r").exists()


def test_serve_refuses_a_public_bind_without_token(files):
    p = subprocess.run([sys.executable, "-m", "edgekd", "serve", "--teacher", files / "teacher.npz",
                        "--data", "digits", "--bind", "0.0.0.0:0"], capture_output=True, text=True,
                       env={**ENV, "EDGEKD_TOKEN": ""}, timeout=60, check=False)
    assert "--token" in one_line_error(p)


def test_device_path_imports_no_host_packages(files):
    code = ("import sys, edgekd.cli, edgekd.link.client, edgekd.link.device_data, edgekd.distill.trainer;"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('onnxruntime','onnx','ai_edge_litert','matplotlib','sklearn','torch','tflite_micro','numba','cryptography')"
            " or m.startswith('edgekd.teachers') or m.startswith('edgekd.export')];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"
    assert os.environ.get("EDGEKD_DEBUG") is None
