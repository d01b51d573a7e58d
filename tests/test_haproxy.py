"""More than one host: two `edgekd serve` replicas (same teacher, data, TLS identity and token)
behind HAProxy from Debian's package, in TCP mode with health checks. The replica serving a
device is killed mid-run; the device reconnects through the balancer to the other one and
ends with the weights of an uninterrupted run (docs/deploy.md)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from linkutil import TOKEN
from test_cli import ENV, as_json
from test_link_security import ServeProc, cli_files  # noqa: F401 - a shared fixture

from edgekd.link.certs import make_self_signed

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")

CONFIG = """global
    maxconn 512
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend edgekd
    bind 127.0.0.1:{front}
    default_backend replicas
backend replicas
    balance roundrobin
    option tcp-check
    default-server inter 300ms fall 2 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def free_port():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def balanced(cli_files, tmp_path_factory):
    """Yield a function that starts replicas + HAProxy and returns (front, replicas, stop)."""
    d = tmp_path_factory.mktemp("ha")
    fp = make_self_signed(d / "host.crt", d / "host.key")

    def start():
        common = ("--teacher", cli_files / "teacher.npz", "--data", "digits", "--tls-cert",
                  d / "host.crt", "--tls-key", d / "host.key", "--idle-timeout", 30)
        replicas = [ServeProc(*common, env={"EDGEKD_TOKEN": TOKEN}) for _ in range(2)]
        front = free_port()
        cfg = d / f"haproxy-{front}.cfg"
        cfg.write_text(CONFIG.format(front=front, a=replicas[0].port, b=replicas[1].port))
        ha = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        end = time.time() + 20
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        def stop():
            ha.send_signal(signal.SIGTERM)
            ha.wait(10)
            for r in replicas:
                if r.proc.poll() is None:
                    r.stop()
        return f"127.0.0.1:{front}", replicas, stop
    return start, fp


@pytest.mark.parametrize("mode", ["host-data", "device-data"])
def test_device_fails_over_to_another_replica_with_the_same_weights(balanced, cli_files, tmp_path, mode):
    start, fp = balanced
    front, replicas, stop = start()
    args = ["train", "--student", cli_files / "student.json", "--epochs", 10, "--no-halting",
            "--window", 2, "--json", "--connect", front,
            "--token", TOKEN, "--tls-fingerprint", fp, "--retries", 12]
    if mode == "device-data":
        args += ["--data", "digits", "--cache-budget", 0]   # keep asking the host every epoch
    try:
        clean = as_json(subprocess.run(
            [sys.executable, "-m", "edgekd", *map(str, args), "--out", tmp_path / "clean"],
            capture_output=True, text=True, env=ENV, timeout=300, check=True))
        seen = [len(r.err) for r in replicas]   # log lines before the run that fails over
        dev = subprocess.Popen([sys.executable, "-m", "edgekd", *map(str, args), "--out", tmp_path / "ha"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        end, victim = time.time() + 60, None
        while victim is None and time.time() < end and dev.poll() is None:
            for j, r in enumerate(replicas):
                if any("authenticated" in line for line in r.err[seen[j]:]):
                    victim = j
            time.sleep(0.02)
        assert victim is not None, "no replica took the device"
        metrics = tmp_path / "ha" / "metrics.jsonl"
        while dev.poll() is None and time.time() < end and (
                not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
            time.sleep(0.02)   # kill it mid-run: two of ten epochs done
        assert dev.poll() is None, "the run ended before the replica could be killed"
        replicas[victim].proc.kill()
        out, err = dev.communicate(timeout=300)
        assert dev.returncode == 0, err
        failed_over = as_json(subprocess.CompletedProcess(args, 0, out, err))
        other = replicas[1 - victim]
        took_over = [line for line in other.err[seen[1 - victim]:] if "authenticated" in line]
        assert took_over, "the other replica never served the device"
        if mode == "host-data":
            assert all("resuming" in line for line in took_over)
        assert failed_over["weights_sha256"] == clean["weights_sha256"]
        assert failed_over["test_accuracy"] == clean["test_accuracy"]
    finally:
        stop()
