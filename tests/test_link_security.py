"""The link against hostile peers (issue 13): each test reproduces an attack against a real
server on loopback — TLS relays and tampering, token guessing, slot hogging, reconnect loops,
oversized frames, the fd limit, what a local user can read, terminal escapes."""

import socket
import ssl
import threading
import time

import pytest
from linkutil import TOKEN
from test_tcp import STUDENT, Running, cfg_for, error_then_closed, hello, raw, read_one, tcp_source

from edgekd.commands import train_student
from edgekd.errors import EdgekdError
from edgekd.link import messages as m
from edgekd.link.certs import make_self_signed
from edgekd.link.client import HostRefused, LinkSource
from edgekd.link.device_data import DeviceDataSource
from edgekd.link.faultproxy import FaultProxy
from edgekd.link.server import Server
from edgekd.link.tls import ClientTls, TlsError, server_context
from edgekd.link.transport import dial_tcp


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    """The host's certificate and key, and an impostor's."""
    d = tmp_path_factory.mktemp("tls")
    fp = make_self_signed(d / "host.crt", d / "host.key")
    evil = make_self_signed(d / "evil.crt", d / "evil.key")
    return {"dir": d, "cert": d / "host.crt", "key": d / "host.key", "fp": fp,
            "evil_cert": d / "evil.crt", "evil_key": d / "evil.key", "evil_fp": evil}


def tls_source(address, cfg, tls, cls=LinkSource, **kw):
    timeout = kw.pop("timeout", 3.0)
    return cls(lambda: dial_tcp(*address, timeout, tls), codec=cfg.codec, x_codec=cfg.x_codec,
               k=cfg.topk, backoff_s=0.01, **kw)


class TlsRelay:
    """A fake host in the middle: it terminates the device's TLS with its own certificate
    and relays plaintext to the real host (the relay attack, now inside TLS)."""

    def __init__(self, upstream, cert, key, upstream_fp):
        self.ctx = server_context(cert, key)
        self.up_tls = ClientTls(fingerprint_hex=upstream_fp)
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                down = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                conn.close()
                continue
            up = dial_tcp(*self.upstream, 3.0, self.up_tls)
            self.relayed += 1
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()

    def _pump(self, down, up):
        try:
            while True:
                up.send(down.recv(65536) or b"")
        except Exception:  # noqa: BLE001 - the relay just ends
            pass

    def close(self):
        self.sock.close()


# -- 1. TLS ------------------------------------------------------------------------------------
@pytest.fixture
def tls_server(teacher, digits, identity):
    s = Running(teacher, digits, tls=server_context(identity["cert"], identity["key"]),
                token=TOKEN, idle_timeout_s=3.0, frame_deadline_s=2.0)
    yield s
    s.close()


def test_tls_pinned_run_matches_plain_tcp_and_reports_socket_and_payload_bytes(
        tls_server, server, identity, tmp_path):
    cfg = cfg_for(epochs=4)
    plain = train_student(STUDENT, tcp_source(server.address, cfg), cfg, str(tmp_path / "plain"))
    src = tls_source(tls_server.address, cfg, ClientTls(fingerprint_hex=identity["fp"]), token=TOKEN)
    tls = train_student(STUDENT, src, cfg, str(tmp_path / "tls"))
    assert tls["weights_sha256"] == plain["weights_sha256"]
    # payload bytes as without TLS (the HMAC answer is 64 hex digits instead of null) ...
    assert tls["bytes_down"] == plain["bytes_down"]
    assert tls["bytes_up"] == plain["bytes_up"] + 64 + 2 - 4
    # ... and what the socket carried, TLS records and handshake included, on top
    payload = tls["bytes_down"] + tls["bytes_up"] + tls["bytes_eval"]
    assert tls["bytes_wire"] > payload
    assert plain["bytes_wire"] == plain["bytes_down"] + plain["bytes_up"] + plain["bytes_eval"]
    log = tls_server.wait_log(1)[0]
    assert "socket with TLS" in log and "stop: " in log


def test_relay_with_another_certificate_is_refused_by_a_pinned_device(
        tls_server, identity, tmp_path):
    relay = TlsRelay(tls_server.address, identity["evil_cert"], identity["evil_key"], identity["fp"])
    try:
        cfg = cfg_for(epochs=1)
        pinned = tls_source(relay.address, cfg, ClientTls(fingerprint_hex=identity["fp"]), token=TOKEN)
        with pytest.raises(TlsError, match="not the pinned one"):
            train_student(STUDENT, pinned, cfg, str(tmp_path / "pin"))
        by_ca = tls_source(relay.address, cfg, ClientTls(ca_path=identity["cert"]), token=TOKEN)
        with pytest.raises(TlsError, match="failed verification"):
            train_student(STUDENT, by_ca, cfg, str(tmp_path / "ca"))
        # the device stopped at the certificate: nothing authenticated through the relay
        assert not [line for line in tls_server.lines if "authenticated" in line]
        # the real host, verified by its CA file and name, is fine
        ok = tls_source(tls_server.address, cfg, ClientTls(ca_path=identity["cert"]), token=TOKEN)
        assert train_student(STUDENT, ok, cfg, str(tmp_path / "ok"))["epochs_run"] == 1
    finally:
        relay.close()


def test_tampering_on_path_is_detected_and_training_ends_as_if_clean(tls_server, identity, tmp_path):
    """Without TLS an on-path proxy could rewrite soft labels and fix the CRC; inside TLS any
    changed byte fails the record MAC: the device reconnects and resumes, weights unchanged."""
    cfg = cfg_for(epochs=4)
    pin = ClientTls(fingerprint_hex=identity["fp"])
    clean = train_student(STUDENT, tls_source(tls_server.address, cfg, pin, token=TOKEN), cfg,
                          str(tmp_path / "clean"))
    proxy = FaultProxy(tls_server.address, cut_bytes=(10**9, 10**9 + 1), flip_prob=0.05, seed=3)
    try:
        src = tls_source(proxy.address, cfg, pin, token=TOKEN, timeout=2.0, retries=30)
        tampered = train_student(STUDENT, src, cfg, str(tmp_path / "tampered"))
    finally:
        proxy.close()
    assert proxy.flips >= 3 and src.reconnects >= 1
    assert tampered["weights_sha256"] == clean["weights_sha256"]
    assert tampered["test_accuracy"] == clean["test_accuracy"]


def test_plain_device_and_tls_host_fail_with_one_clear_error(tls_server, server, identity, tmp_path):
    cfg = cfg_for(epochs=1)
    with pytest.raises(EdgekdError, match="gave up"):
        train_student(STUDENT, tcp_source(tls_server.address, cfg, token=TOKEN, retries=0, timeout=1.0), cfg,
                      str(tmp_path / "a"))
    pin = ClientTls(fingerprint_hex=identity["fp"])
    with pytest.raises(EdgekdError, match="TLS handshake"):
        train_student(STUDENT, tls_source(server.address, cfg, pin, retries=0), cfg,
                      str(tmp_path / "b"))


def test_non_loopback_bind_needs_tls_and_a_strong_token(teacher, digits, identity):
    ctx = server_context(identity["cert"], identity["key"])
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        Server(teacher, digits, "0.0.0.0", 0, token=TOKEN)
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        Server(teacher, digits, "0.0.0.0", 0, tls=ctx)
    srv = Server(teacher, digits, "0.0.0.0", 0, token=TOKEN, tls=ctx)
    srv.shutdown()


@pytest.fixture
def server(teacher, digits):
    s = Running(teacher, digits, idle_timeout_s=2.0, frame_deadline_s=1.0, max_devices=4)
    yield s
    s.close()


class ServeProc:
    """`edgekd serve` as a process on `bind`, with its stderr collected by a thread."""

    def __init__(self, *args, bind="127.0.0.1:0", env=None, preexec=None):
        import json
        import subprocess
        import sys

        from test_cli import ENV
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekd", "serve", *map(str, args),
                                      "--bind", bind, "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**ENV, **(env or {})},
                                     preexec_fn=preexec)
        line = self.proc.stdout.readline()
        self.err = []
        threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")),
                         daemon=True).start()
        if not line:
            self.proc.wait(30)
            time.sleep(0.2)
            raise AssertionError("serve did not start: " + "".join(self.err))
        info = json.loads(line)
        self.port = info["port"]
        self.connect = f"127.0.0.1:{info['port']}"

    def wait_err(self, text, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if any(text in line for line in self.err):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(20)
        time.sleep(0.1)
        return self.proc.returncode, "".join(self.err)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    import json

    from test_cli import STUDENT as CLI_STUDENT
    from test_cli import TEACHER, edgekd
    d = tmp_path_factory.mktemp("seccli")
    (d / "teacher.json").write_text(json.dumps(TEACHER))
    (d / "student.json").write_text(json.dumps(CLI_STUDENT))
    edgekd("teacher", "--spec", d / "teacher.json", "--data", "digits", "--epochs", 4,
           "-o", d / "teacher.npz")
    return d


def test_cli_tls_init_serve_on_all_interfaces_and_a_pinned_device(cli_files, tmp_path):
    from test_cli import as_json, edgekd, one_line_error
    init = as_json(edgekd("tls", "init", "--cert", tmp_path / "h.crt", "--key", tmp_path / "h.key",
                          "--json"))
    assert init["sha256"] == edgekd("tls", "fingerprint", tmp_path / "h.crt").stdout.strip()
    assert (tmp_path / "h.key").stat().st_mode & 0o077 == 0
    token = as_json(edgekd("tls", "token", "--json"))
    assert token["bits"] >= 128
    p = edgekd("serve", "--teacher", cli_files / "teacher.npz", "--data", "digits",
               "--bind", "0.0.0.0:0", "--token", token["token"], check=False)
    assert "without TLS" in one_line_error(p)
    host = ServeProc("--teacher", cli_files / "teacher.npz", "--data", "digits",
                     "--tls-cert", tmp_path / "h.crt", "--tls-key", tmp_path / "h.key",
                     bind="0.0.0.0:0", env={"EDGEKD_TOKEN": token["token"]})
    try:
        common = ["train", "--student", cli_files / "student.json", "--epochs", 3, "--json",
                  "--connect", host.connect, "--token", token["token"]]
        run = as_json(edgekd(*common, "--tls-fingerprint", init["sha256"], "--out", tmp_path / "r"))
        assert run["epochs_run"] == 3 and run["bytes_wire"] > run["bytes_down"] + run["bytes_up"]
        bad = edgekd(*common, "--tls-fingerprint", "00" * 32, "--out", tmp_path / "bad", check=False)
        assert "not the pinned one" in one_line_error(bad)
        assert not (tmp_path / "bad").exists() or not (tmp_path / "bad" / "student.npz").exists()
    finally:
        code, log = host.stop()
    assert code == 0 and "Traceback" not in log and "socket with TLS" in log
