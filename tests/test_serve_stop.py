"""`edgekd serve` stops on SIGINT while devices hang on it, also when it was started as a
background job (a shell starts those with SIGINT ignored, and Python keeps it ignored)."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from test_cli import ENV, STUDENT, TEACHER, edgekd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stop")
    (d / "teacher.json").write_text(json.dumps(TEACHER))
    (d / "student.json").write_text(json.dumps(STUDENT))
    edgekd("teacher", "--spec", d / "teacher.json", "--data", "digits", "--epochs", 1,
           "-o", d / "teacher.npz")
    return d


def wait_for(what, cond, seconds=120):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default",
                                                                          "sigint-ignored"])
def test_serve_stops_on_sigint_with_hung_devices(files, tmp_path, inherited):
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        serve = subprocess.Popen(
            [sys.executable, "-m", "edgekd", "serve", "--teacher", str(files / "teacher.npz"),
             "--data", "digits", "--bind", "127.0.0.1:0", "--json"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=ENV,
            preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    hung, device = [], None
    try:
        info = json.loads(serve.stdout.readline())
        addr = (info["host"], info["port"])
        # an authenticated device that stops mid-run (its session waits in recv) ...
        device = subprocess.Popen(
            [sys.executable, "-m", "edgekd", "train", "--student", str(files / "student.json"),
             "--epochs", "500", "--no-halting", "--connect", f"{addr[0]}:{addr[1]}",
             "--out", str(tmp_path / "run")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        wait_for("the device's session", lambda: "authenticated" in log.read_text())
        device.send_signal(signal.SIGSTOP)
        # ... one that connected and said nothing, one that stopped inside a frame header
        for first in (b"", b"EK\x01"):
            s = socket.create_connection(addr)
            s.sendall(first)
            hung.append(s)
        time.sleep(0.5)
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=20)   # a hang detector, not a timing bar: it takes well under 1 s
        except subprocess.TimeoutExpired:
            pytest.fail(f"edgekd serve still running 20 s after SIGINT; log:\n{log.read_text()}")
    finally:
        for s in hung:
            s.close()
        if device is not None:
            device.kill()
            device.wait()
        if serve.poll() is None:
            serve.kill()
        serve.wait()
        serve.stdout.close()
    text = log.read_text()
    assert serve.returncode == 0 and "edgekd serve: stopped" in text and "Traceback" not in text, text
