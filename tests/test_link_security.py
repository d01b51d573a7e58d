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

from edgekd.workflows import train_student
from edgekd.errors import EdgekdError
from edgekd.link import messages as m
from edgekd.link.certs import make_self_signed
from edgekd.link.client import HostRefused, LinkSource
from edgekd.link.device_data import DeviceDataSource
from edgekd.link.faultproxy import FaultProxy
from edgekd.link.server import SoftLabelServer
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


def tls_source(address, link, tls, cls=LinkSource, **kw):
    timeout = kw.pop("timeout", 3.0)
    return cls(lambda: dial_tcp(*address, timeout, tls), backoff_s=0.01, **link.source_kwargs(), **kw)


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
    cfg, link = cfg_for(epochs=4)
    plain = train_student(STUDENT, tcp_source(server.address, link), cfg, str(tmp_path / "plain"))
    src = tls_source(tls_server.address, link, ClientTls(fingerprint_hex=identity["fp"]), token=TOKEN)
    tls = train_student(STUDENT, src, cfg, str(tmp_path / "tls"))
    assert tls["weights_sha256"] == plain["weights_sha256"]
    # payload bytes as without TLS (the HMAC answer is 64 hex digits instead of null, WELCOME
    # says auth true instead of false) ...
    assert tls["bytes_down"] == plain["bytes_down"] - 1
    assert tls["bytes_up"] == plain["bytes_up"] + 64 + 2 - 4
    # ... and what the socket carried, TLS records and handshake included, on top
    payload = tls["bytes_down"] + tls["bytes_up"] + tls["bytes_eval"]
    assert tls["bytes_wire"] > payload
    assert plain["bytes_wire"] == plain["bytes_down"] + plain["bytes_up"] + plain["bytes_eval"]
    log = tls_server.wait_log(1)[0]
    assert "socket with TLS" in log and "stop: " in log


def test_a_device_never_talks_plain_tcp_off_loopback(cli_files, tmp_path):
    """Without a pin, a relay or an on-path rewriter passes for the host (the token only
    proves the device): off loopback the device refuses before it dials, in one line."""
    from test_cli import edgekd
    for where in ("192.0.2.1:7707", "[2001:db8::1]:7707", "host.invalid:7707"):
        p = edgekd("train", "--student", cli_files / "student.json", "--connect", where,
                   "--token", TOKEN, "--out", tmp_path / "r", check=False)
        assert p.returncode == 1, p.stderr
        assert p.stderr.count("\n") == 1 and "not on loopback" in p.stderr
        assert "--tls-fingerprint" in p.stderr and "Traceback" not in p.stderr
        assert not (tmp_path / "r").exists()


def test_relay_with_another_certificate_is_refused_by_a_pinned_device(
        tls_server, identity, tmp_path):
    relay = TlsRelay(tls_server.address, identity["evil_cert"], identity["evil_key"], identity["fp"])
    try:
        cfg, link = cfg_for(epochs=1)
        pinned = tls_source(relay.address, link, ClientTls(fingerprint_hex=identity["fp"]), token=TOKEN)
        with pytest.raises(TlsError, match="not the pinned one"):
            train_student(STUDENT, pinned, cfg, str(tmp_path / "pin"))
        by_ca = tls_source(relay.address, link, ClientTls(ca_path=identity["cert"]), token=TOKEN)
        with pytest.raises(TlsError, match="failed verification"):
            train_student(STUDENT, by_ca, cfg, str(tmp_path / "ca"))
        # the device stopped at the certificate: nothing authenticated through the relay
        assert not [line for line in tls_server.lines if "authenticated" in line]
        # the real host, verified by its CA file and name, is fine
        ok = tls_source(tls_server.address, link, ClientTls(ca_path=identity["cert"]), token=TOKEN)
        assert train_student(STUDENT, ok, cfg, str(tmp_path / "ok"))["epochs_run"] == 1
    finally:
        relay.close()


def test_tampering_on_path_is_detected_and_training_ends_as_if_clean(tls_server, identity, tmp_path):
    """Without TLS an on-path proxy could rewrite soft labels and fix the CRC; inside TLS any
    changed byte fails the record MAC: the device reconnects and resumes, weights unchanged."""
    cfg, link = cfg_for(epochs=4)
    pin = ClientTls(fingerprint_hex=identity["fp"])
    clean = train_student(STUDENT, tls_source(tls_server.address, link, pin, token=TOKEN), cfg,
                          str(tmp_path / "clean"))
    proxy = FaultProxy(tls_server.address, cut_bytes=(10**9, 10**9 + 1), flip_prob=0.05, seed=3)
    try:
        src = tls_source(proxy.address, link, pin, token=TOKEN, timeout=2.0, retries=30)
        tampered = train_student(STUDENT, src, cfg, str(tmp_path / "tampered"))
    finally:
        proxy.close()
    assert proxy.flips >= 3 and src.reconnects >= 1
    assert tampered["weights_sha256"] == clean["weights_sha256"]
    assert tampered["test_accuracy"] == clean["test_accuracy"]


def test_plain_device_and_tls_host_fail_with_one_clear_error(tls_server, server, identity, tmp_path):
    cfg, link = cfg_for(epochs=1)
    with pytest.raises(EdgekdError, match="gave up"):
        train_student(STUDENT, tcp_source(tls_server.address, link, token=TOKEN, retries=0, timeout=1.0), cfg,
                      str(tmp_path / "a"))
    pin = ClientTls(fingerprint_hex=identity["fp"])
    with pytest.raises(EdgekdError, match="TLS handshake"):
        train_student(STUDENT, tls_source(server.address, link, pin, retries=0), cfg,
                      str(tmp_path / "b"))


def test_non_loopback_bind_needs_tls_and_a_strong_token(teacher, digits, identity):
    ctx = server_context(identity["cert"], identity["key"])
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        SoftLabelServer(teacher, digits, "0.0.0.0", 0, token=TOKEN)
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        SoftLabelServer(teacher, digits, "0.0.0.0", 0, tls=ctx)
    srv = SoftLabelServer(teacher, digits, "0.0.0.0", 0, token=TOKEN, tls=ctx)
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
    assert token["random_bits"] == 256 and token["estimated_bits"] >= 128
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
    assert "any local user" not in log   # a token host does not warn


# -- 2. tokens and brute force -----------------------------------------------------------------
def test_weak_tokens_are_refused_unless_asked_for(teacher, digits):
    from edgekd.link.tokens import token_bits
    for weak in ("1234", "s3cret", "a" * 64, "password-password-password"):
        with pytest.raises(EdgekdError, match="--weak-token"):
            SoftLabelServer(teacher, digits, token=weak)
    SoftLabelServer(teacher, digits, token="1234", weak_token=True).shutdown()
    assert token_bits(TOKEN) >= 128 and token_bits("0123456789abcdef" * 2) >= 128


def guess(address, auth):
    """One brute-force try: 'refused' (the guess was checked), 'busy' (throttled), or None."""
    sock = socket.create_connection(address, timeout=5)
    try:
        ftype, _, payload = read_one(sock)
        if ftype == m.T.ERROR:
            return "busy" if m.unpack_error(payload)[0] == m.ERR_BUSY else None
        sock.sendall(hello(auth=auth))
        ftype, _, payload = read_one(sock)
        code, text = m.unpack_error(payload)
        return "refused" if "authentication failed" in text else None
    finally:
        sock.close()


def test_token_brute_force_is_throttled_per_address_and_the_device_still_gets_in(
        teacher, digits, tmp_path):
    base = 0.25
    s = Running(teacher, digits, token=TOKEN, auth_backoff_s=base)
    try:
        seen = {"refused": 0, "busy": 0, None: 0}
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 2.0:   # guess 4-digit tokens as fast as we can
            seen[guess(s.address, m.hello_mac(f"{i:04d}", bytes(16)))] += 1
            i += 1
        elapsed = time.monotonic() - start
        # k checked guesses cost base·(2^(k-1) - 1) s of waiting: a handful, not thousands
        import math
        assert 1 <= seen["refused"] <= math.log2(elapsed / base + 1) + 1
        assert seen["busy"] >= 10 and seen[None] == 0
        assert any("throttled for" in line for line in s.lines)
        # the real device, same address, backs off through "busy" and gets in
        cfg, link = cfg_for(epochs=1)
        src = tcp_source(s.address, link, token=TOKEN, retries=12)
        assert train_student(STUDENT, src, cfg, str(tmp_path / "ok"))["epochs_run"] == 1
    finally:
        s.close()


# -- 3. admission ------------------------------------------------------------------------------
class Hogs:
    """`n` connections kept open by a thread: idle pre-auth sockets, re-opened when dropped,
    or (wake=True) sessions that sent a valid HELLO and then only WAKE with no ids."""

    def __init__(self, address, n, wake=False, period=0.3, reopen=True):
        self.address, self.wake, self.period, self.reopen = address, wake, period, reopen
        self.stopping = threading.Event()
        self.opened = self.dropped = 0
        self.socks = [self._open() for _ in range(n)]
        threading.Thread(target=self._run, daemon=True).start()

    def _open(self):
        sock = socket.create_connection(self.address, timeout=5)
        self.opened += 1
        if self.wake:
            read_one(sock)
            sock.sendall(hello())
            read_one(sock)
        sock.setblocking(False)
        return sock

    def _run(self):
        while not self.stopping.is_set():
            for j, sock in enumerate(self.socks):
                if sock is None:
                    continue
                try:
                    if self.wake:
                        sock.sendall(m.frame(m.T.WAKE, m.pack_ids([])))
                    if sock.recv(65536) == b"":
                        raise ConnectionError
                except BlockingIOError:
                    continue
                except OSError:
                    self.dropped += 1
                    sock.close()
                    self.socks[j] = None
                    if self.reopen and not self.stopping.is_set():
                        try:
                            self.socks[j] = self._open()
                        except OSError:
                            pass
            time.sleep(self.period)

    def close(self):
        self.stopping.set()
        for sock in self.socks:
            if sock is not None:
                sock.close()


def run_devices(address, n, tmp_path, **kw):
    """n devices training at once; their results (or exceptions)."""
    cfg, link = cfg_for(epochs=2)
    out = [None] * n

    def one(j):
        try:
            out[j] = train_student(STUDENT, tcp_source(address, link, **kw), cfg, str(tmp_path / f"d{j}"))
        except Exception as e:  # noqa: BLE001
            out[j] = e
    threads = [threading.Thread(target=one, args=(j,)) for j in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.parametrize("n", [8, 24])
def test_idle_unauthenticated_sockets_cannot_lock_out_real_devices(teacher, digits, tmp_path, n):
    """Fewer hogs than the pre-auth budget, and more (each new connection then evicts the
    one that has waited longest): three real devices get in and train either way."""
    s = Running(teacher, digits, token=TOKEN, max_devices=2, max_pending=16,
                handshake_timeout_s=1.0)
    hogs = Hogs(s.address, n)
    try:
        results = run_devices(s.address, 3, tmp_path, token=TOKEN, retries=12)
        assert all(isinstance(r, dict) and r["epochs_run"] == 2 for r in results), results
        end = time.time() + 10   # and the handshake deadline closes them (they come back)
        while hogs.dropped < n and time.time() < end:
            time.sleep(0.1)
        assert hogs.dropped >= n
        assert s.srv.admission.pending <= 16 and (n < 16 or s.srv.admission.evicted_pending > 0)
    finally:
        hogs.close()
        s.close()


def test_a_hello_whose_peer_vanishes_does_not_keep_its_slot(teacher, digits, tmp_path):
    """Clients that send a valid HELLO and reset the connection at once (the WELCOME's send can
    fail right after the slot was taken): every slot comes back, and a real device gets in."""
    import struct
    s = Running(teacher, digits, max_devices=1)
    try:
        for _ in range(40):
            sock = raw(s.address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(hello())
            sock.close()                       # RST, before the WELCOME is read
        end = time.time() + 10
        while s.srv.admission.active and time.time() < end:
            time.sleep(0.05)
        assert s.srv.admission.active == 0
        results = run_devices(s.address, 1, tmp_path)
        assert isinstance(results[0], dict) and results[0]["epochs_run"] == 2, results
    finally:
        s.close()


def test_keepalives_without_progress_do_not_hold_slots(teacher, digits, tmp_path):
    s = Running(teacher, digits, max_devices=4, idle_timeout_s=1.5)
    hogs = Hogs(s.address, 4, wake=True, reopen=False)
    try:
        # every slot is held: the device is told "busy", backs off, and gets in once the
        # no-progress rule has closed the hogs
        results = run_devices(s.address, 1, tmp_path, retries=12)
        assert isinstance(results[0], dict) and results[0]["epochs_run"] == 2, results
        assert hogs.dropped == 4
        assert len(s.wait_log(4, match="no training progress")) == 4
        assert s.wait_log(1, match="busy:")
    finally:
        hogs.close()
        s.close()


# -- 4. bounded, identity-aware reconnect ------------------------------------------------------
class OversizeHost:
    """A hostile host: a proper CHALLENGE and WELCOME, then a frame header announcing 2 MiB,
    on every connection (a device used to reconnect forever: the handshake reset its count)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                conn.sendall(m.frame(m.T.CHALLENGE, bytes(16)))
                read_one(conn)
                info = {"num_train": 1438, "num_val": 0, "num_test": 359, "features": 64,
                        "classes": 10, "codec": "f32", "x_codec": "f32", "k": 4,
                        "mode": "host-data", "test_split": True, "session": "ab" * 16,
                        "max_frame": 1 << 20}
                conn.sendall(m.frame(m.T.WELCOME, m.pack_json(info)))
                conn.sendall(b"EK\x01\x05\x00\x00" + (2 << 20).to_bytes(4, "little"))
                conn.recv(1 << 16)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


def test_reconnects_without_progress_are_bounded_even_when_handshakes_succeed(tmp_path):
    host = OversizeHost()
    try:
        cfg, link = cfg_for(val_fraction=0.0, codec="f32", x_codec="f32")
        with pytest.raises(EdgekdError, match="gave up after 3 connection attempts"):
            train_student(STUDENT, tcp_source(host.address, link, retries=3), cfg, str(tmp_path / "r"))
        assert host.connections == 4
    finally:
        host.close()


class SilentDropProxy:
    """Forwards, then after `cut` bytes towards the device closes only the device's side: the
    host's socket stays open and quiet, so its session looks alive (a dead radio link)."""

    def __init__(self, upstream, cut):
        self.upstream, self.cut = upstream, cut
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.kept, self.drops = [], 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        first = True
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(up, down, self.cut if first else None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, None), daemon=True).start()
            first = False

    def _pump(self, src, dst, cut):
        sent = 0
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if cut is not None and sent + len(data) >= cut:
                    self.drops += 1
                    self.kept.append(src)      # the host's end: open, never read again
                    dst.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            if s not in self.kept:
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for s in self.kept:
            s.close()


def test_reconnect_replaces_its_own_stale_session_when_the_host_is_full(teacher, digits, tmp_path):
    s = Running(teacher, digits, max_devices=1, idle_timeout_s=60.0)
    proxy = SilentDropProxy(s.address, cut=40_000)
    try:
        cfg, link = cfg_for(epochs=4)
        clean = train_student(STUDENT, tcp_source(s.address, link), cfg, str(tmp_path / "clean"))
        src = tcp_source(proxy.address, link, timeout=1.0, retries=4)
        dropped = train_student(STUDENT, src, cfg, str(tmp_path / "dropped"))
        assert proxy.drops == 1 and src.reconnects >= 1
        assert dropped["weights_sha256"] == clean["weights_sha256"]
        assert s.wait_log(1, match="replaces its own stale session")
    finally:
        proxy.close()
        s.close()


@pytest.mark.parametrize("mode", ["host-data", "device-data"])
def test_the_first_connection_is_retried_until_the_host_is_up(teacher, digits, tmp_path, mode):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg, link = cfg_for(epochs=1)
    kw = {"cls": DeviceDataSource, "data": digits} if mode == "device-data" else {}
    src = tcp_source(("127.0.0.1", port), link, retries=10, **kw)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=train_student(STUDENT, src, cfg, str(tmp_path / "r"))))
    t.start()
    time.sleep(0.5)   # the device is already knocking
    srv = SoftLabelServer(teacher, digits, "127.0.0.1", port)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t.join(60)
        assert out["r"]["epochs_run"] == 1 and src.reconnects == 0
    finally:
        srv.shutdown()


# -- 5. negotiated frame caps ------------------------------------------------------------------
def test_hellos_whose_batches_cannot_fit_the_device_are_refused_with_a_reason(server):
    socks = []
    for _ in range(8):   # 784-feature-sized asks used to make the host build 63 MB frames
        sock = raw(server.address)
        sock.sendall(hello(batch=65535))
        code, text = error_then_closed(sock)
        assert code == m.ERR_REFUSED and "frame cap of 1,048,576" in text and "--batch 3472" in text
        socks.append(sock)
    sock = raw(server.address)
    sock.sendall(hello(batch=32, max_frame=4096))
    code, text = error_then_closed(sock)
    assert "--batch 13 or less" in text
    for s_ in socks + [sock]:
        s_.close()


def test_a_small_device_cap_is_honoured_by_the_host(server, tmp_path):
    cfg, link = cfg_for(epochs=2, batch=13, codec="f32", x_codec="f32")   # 13 x 302 + 16 <= 4096
    src = tcp_source(server.address, link, max_payload=4096)
    res = train_student(STUDENT, src, cfg, str(tmp_path / "r"))
    assert res["epochs_run"] == 2 and src.reconnects == 0
    big_cfg, big_link = cfg_for(batch=14, codec="f32", x_codec="f32")
    big = tcp_source(server.address, big_link, max_payload=4096)
    with pytest.raises(HostRefused, match="--batch 13 or less"):
        train_student(STUDENT, big, big_cfg, str(tmp_path / "b"))


def test_device_data_queries_must_fit_the_hosts_cap(teacher, digits, tmp_path):
    s = Running(teacher, digits, max_payload=8192)
    try:
        cfg, link = cfg_for(epochs=1, batch=64, codec="f32", x_codec="f32")
        src = tcp_source(s.address, link, DeviceDataSource, data=digits)
        with pytest.raises(HostRefused, match="over the host's frame cap of 8,192"):
            train_student(STUDENT, src, cfg, str(tmp_path / "r"))
        cfg, link = cfg_for(epochs=1, batch=31, codec="f32", x_codec="f32")   # 4 + 31·260 <= 8192
        src = tcp_source(s.address, link, DeviceDataSource, data=digits)
        assert train_student(STUDENT, src, cfg, str(tmp_path / "ok"))["epochs_run"] == 1
    finally:
        s.close()


# -- 6. the fd limit ---------------------------------------------------------------------------
FD_SERVER = """
import json, resource, sys
from edgekd.data import load_dataset
from edgekd.link.limits import open_fds
from edgekd.link.server import SoftLabelServer
from linkutil import StubTeacher
srv = SoftLabelServer(StubTeacher(), load_dataset("digits"), max_devices=4, max_pending=64,
             log=lambda line: print(line, file=sys.stderr, flush=True))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 6, hard))
print(json.dumps({"port": srv.address[1]}), flush=True)
srv.serve_forever()
"""


def test_accept_at_the_fd_limit_backs_off_and_keeps_serving(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from test_cli import ENV
    here = os.path.dirname(__file__)
    proc = subprocess.Popen([sys.executable, "-c", FD_SERVER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONPATH": here + os.pathsep + ENV.get("PYTHONPATH", "")})
    try:
        port = json.loads(proc.stdout.readline())["port"]
        err = []
        threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        end = time.time() + 15
        while not any("backing off" in line for line in err) and time.time() < end:
            time.sleep(0.05)
        assert any("Too many open files" in line and "backing off" in line for line in err)
        for sock in flood:
            sock.close()
        assert proc.poll() is None   # still serving
        cfg, link = cfg_for(epochs=1)
        res = train_student(STUDENT, tcp_source(("127.0.0.1", port), link, retries=12), cfg,
                            str(tmp_path / "r"))
        assert res["epochs_run"] == 1
    finally:
        proc.kill()
        proc.wait(10)


def test_serve_raises_its_soft_fd_limit_or_clamps_max_devices(cli_files):
    import resource

    def limit(soft, hard):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    common = ("--teacher", cli_files / "teacher.npz", "--data", "digits", "--max-devices", 2000)
    raised = ServeProc(*common, preexec=limit(256, max(hard, 4096)) if hard >= 4096 else limit(256, hard))
    clamped = ServeProc(*common, preexec=limit(128, 128))
    try:
        assert clamped.wait_err("cannot hold 2000 devices; serving at most")
        with open(f"/proc/{raised.proc.pid}/limits") as f:
            soft = int(next(line for line in f if line.startswith("Max open files")).split()[3])
        assert soft >= 2000 or raised.wait_err("cannot hold 2000 devices")
    finally:
        raised.stop()
        clamped.stop()


# -- 7. what a local user can read -------------------------------------------------------------
def test_no_test_split_keeps_it_on_the_host(teacher, digits, tmp_path):
    s = Running(teacher, digits, test_split=False)
    try:
        sock = raw(s.address)
        sock.sendall(hello())
        assert read_one(sock)[0] == m.T.WELCOME
        sock.sendall(m.frame(m.T.FETCH, m.pack_fetch(m.SPLIT_TEST, 0)))
        code, text = error_then_closed(sock)
        assert code == m.ERR_REFUSED and "--no-test-split" in text
        sock.close()
        cfg, link = cfg_for(epochs=2)
        src = tcp_source(s.address, link)
        res = train_student(STUDENT, src, cfg, str(tmp_path / "r"))
        assert res["test_accuracy"] is None and res["bytes_eval"] == 0 and res["epochs_run"] == 2
    finally:
        s.close()


def test_ipv6_loopback_is_loopback(teacher, digits, tmp_path):
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    srv = SoftLabelServer(teacher, digits, "::1", 0)   # refused as "not loopback" before
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg, link = cfg_for(epochs=1)
        res = train_student(STUDENT, tcp_source(srv.address, link), cfg, str(tmp_path / "r"))
        assert res["epochs_run"] == 1 and srv.address[0] == "::1"
    finally:
        srv.shutdown()


# -- 8. terminal hygiene -----------------------------------------------------------------------
ANSI = "\x1b[2J\x1b[31mpwned\x07\u202e"


def test_serve_says_who_can_read_the_data_and_escapes_network_text(cli_files, tmp_path):
    """One no-token host on [::1] with --no-test-split: it warns at start, keeps the test
    split, and prints what hostile clients send (STOP reasons, bad HELLO fields) escaped."""
    from test_cli import as_json, edgekd

    from edgekd.cli.train_cmd import summary_text
    v6 = socket.has_ipv6
    host = ServeProc("--teacher", cli_files / "teacher.npz", "--data", "digits", "--no-test-split",
                     bind="[::1]:0" if v6 else "127.0.0.1:0")
    try:
        assert host.wait_err("any local user can connect and read the training data")
        connect = f"[::1]:{host.port}" if v6 else host.connect
        r = as_json(edgekd("train", "--student", cli_files / "student.json", "--epochs", 1,
                           "--json", "--connect", connect, "--out", tmp_path / "r"))
        assert r["test_accuracy"] is None and r["bytes_eval"] == 0
        assert "test accuracy n/a" in summary_text({**r, "output": "x"})
        addr = ("::1" if v6 else "127.0.0.1", host.port)
        sock = raw(addr)
        sock.sendall(hello(codec=ANSI))
        error_then_closed(sock)
        sock = raw(addr)
        sock.sendall(hello())
        read_one(sock)
        sock.sendall(m.frame(m.T.STOP, ANSI.encode()))
        assert read_one(sock)[0] == m.T.BYE
        end = time.time() + 10
        while time.time() < end and sum("pwned" in line for line in host.err) < 2:
            time.sleep(0.05)
    finally:
        _, log = host.stop()
    assert "\x1b" not in log and "\x07" not in log and "\u202e" not in log
    assert log.count("\\x1b[31mpwned\\x07\\u202e") == 2
    # and a hostile host's ERROR text on the device's terminal
    fake = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = fake.accept()
        conn.sendall(m.frame(m.T.ERROR, m.pack_error(m.ERR_REFUSED, ANSI)))
        time.sleep(0.5)
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    p = edgekd("train", "--student", cli_files / "student.json", "--connect",
               f"127.0.0.1:{fake.getsockname()[1]}", "--out", tmp_path / "f", check=False)
    fake.close()
    assert p.returncode == 1 and "pwned" in p.stderr and "\x1b" not in p.stderr


class CountingTeacher:
    """The stub teacher, counting the samples it was asked about."""
    num_classes, input_shape = 10, (64,)

    def __init__(self):
        from linkutil import StubTeacher
        self.inner, self.asked = StubTeacher(), 0

    def logits(self, x):
        self.asked += len(x)
        return self.inner.logits(x)


def test_the_host_builds_one_frame_at_a_time(digits):
    from edgekd.link.host_protocol import HostProtocol
    teacher = CountingTeacher()
    proto = HostProtocol(teacher, digits, None)
    list(proto.handle(m.T.HELLO, 0, m.pack_json(
        {"proto": 2, "input_shape": [64], "num_classes": 10, "seed": 0, "batch": 8,
         "val_fraction": 0.0, "codec": "f32", "x_codec": "f32", "max_frame": 1 << 20})))
    frames = iter(proto.handle(m.T.EPOCH, 0, m.pack_epoch(0, 0, 64)))
    next(frames)
    assert teacher.asked == 8          # one batch built, not the window's 64
    frames = iter(proto.handle(m.T.FETCH, 0, m.pack_fetch(m.SPLIT_TEST, 0)))
    next(frames)
    assert teacher.asked == 8          # the test split costs no teacher call, one frame built


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_sessions_that_never_read_hold_one_frame_each_not_a_window(tmp_path):
    """8 sessions ask for 1 MiB frames, 64 in flight, and never read: the host used to build
    every frame of the window up front (hundreds of MB); now each session waits with one."""
    import numpy as np
    rng = np.random.default_rng(0)
    n, f = 8_000, 784
    x = (rng.integers(0, 256, (n, f)) / 255).astype(np.float32)
    np.savez(tmp_path / "big.npz", x_train=x, y_train=rng.integers(0, 10, n),
             x_test=x[:100], y_test=rng.integers(0, 10, 100))
    np.save(tmp_path / "logits.npy", rng.standard_normal((n, 10)).astype(np.float32))
    host = ServeProc("--teacher", tmp_path / "logits.npy", "--data", tmp_path / "big.npz",
                     "--idle-timeout", 60)
    socks = []
    try:
        pid = host.proc.pid
        before = _rss_mib(pid)
        batch = ((1 << 20) - 16) // (6 + 4 * f + 40)   # the largest batch a 1 MiB frame holds
        for _ in range(8):
            sock = raw(("127.0.0.1", host.port))
            sock.sendall(hello(input_shape=[f], batch=batch, val_fraction=0.0))
            assert read_one(sock)[0] == m.T.WELCOME
            sock.sendall(m.frame(m.T.EPOCH, m.pack_epoch(0, 0, 64)))
            socks.append(sock)
        # wait until the host has done all it will do (its CPU time stops moving)
        last, end = -1, time.time() + 60
        while time.time() < end:
            ticks = _cpu_ticks(pid)
            if ticks == last:
                break
            last = ticks
            time.sleep(0.5)
        grown = _rss_mib(pid) - before
        print(f"RSS {before:.0f} MiB -> {before + grown:.0f} MiB")
        assert grown < 120, f"RSS grew {grown:.0f} MiB for 8 stalled sessions"
        assert host.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        host.stop()


def test_a_welcome_too_big_for_the_device_is_refused_not_sent():
    import numpy as np

    from edgekd.data.datasets import Dataset
    from edgekd.link.codecs import affine8_params
    from edgekd.link.frames import ProtocolError
    from edgekd.link.host_protocol import HostProtocol
    rng = np.random.default_rng(1)
    x = rng.random((40, 784)).astype(np.float32)
    data = Dataset("wide", x, rng.integers(0, 10, 40), x[:4], rng.integers(0, 10, 4), 10)

    class Wide:
        num_classes, input_shape = 10, (784,)

        def logits(self, xs):
            return np.zeros((len(xs), 10), np.float32)
    body = {"proto": 2, "input_shape": [784], "num_classes": 10, "seed": 0, "batch": 1,
            "val_fraction": 0.0, "codec": "f32", "x_codec": "u8", "max_frame": 4096}
    proto = HostProtocol(Wide(), data, affine8_params(x))
    with pytest.raises(ProtocolError, match="WELCOME would be 6,.* bytes, over the device's frame cap of 4,096"):
        list(proto.handle(m.T.HELLO, 0, m.pack_json(body)))
