"""The host<->device link over real TCP sockets on loopback: same weights as in-process,
resume through a fault-injecting proxy, and a server that survives any client."""

import json
import re
import socket
import struct
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from edgekd.workflows import train_student
from edgekd.distill.config import TrainConfig
from edgekd.distill.halting import HaltingConfig
from edgekd.errors import EdgekdError
from edgekd.link import messages as m
from edgekd.link.client import HostRefused, LinkSource
from edgekd.link.device_data import DeviceDataSource
from edgekd.link.faultproxy import FaultProxy
from edgekd.link.fetch_once import FetchOnceSource
from edgekd.link.frames import HEADER, decode_frame, encode_frame
from edgekd.link.local import LocalSource
from edgekd.link.settings import LinkConfig
from edgekd.link.server import SoftLabelServer
from edgekd.link.transport import dial_tcp
from linkutil import TOKEN

STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                      {"type": "dense", "units": 10}]}


class Running:
    """A SoftLabelServer on a free loopback port, served from a thread, with its log captured."""

    def __init__(self, teacher, data, **kw):
        self.lines = []
        self.srv = SoftLabelServer(teacher, data, "127.0.0.1", 0, log=self.lines.append, **kw)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        self.address = self.srv.address

    def wait_log(self, n, timeout=10, match=" B down"):
        """The first n log lines containing `match` (session summaries by default)."""
        end = time.time() + timeout
        while time.time() < end:
            got = [line for line in self.lines if match in line]
            if len(got) >= n:
                return got
            time.sleep(0.02)
        return [line for line in self.lines if match in line]

    def close(self):
        self.srv.shutdown()
        self.thread.join(5)


@pytest.fixture
def server(teacher, digits):
    s = Running(teacher, digits, idle_timeout_s=2.0, frame_deadline_s=1.0, max_devices=4)
    yield s
    s.close()


def tcp_source(address, link, cls=LinkSource, **kw):
    kw.setdefault("timeout", 3.0)
    timeout = kw.pop("timeout")
    return cls(lambda: dial_tcp(*address, timeout), backoff_s=0.01, **link.source_kwargs(), **kw)


def cfg_for(**kw):
    """A run's training settings and, apart, its link settings (codec, x_codec, topk)."""
    link = LinkConfig(**{k: kw.pop(k) for k in ("codec", "x_codec", "topk") if k in kw})
    return TrainConfig(**{"epochs": 8, "lr": 0.01, **kw}), link


def test_tcp_equals_in_process_and_counts_real_bytes(server, teacher, digits, tmp_path):
    cfg, link = cfg_for()
    local = train_student(STUDENT, LocalSource(teacher, digits, **link.source_kwargs()),
                          cfg, str(tmp_path / "local"))
    src = tcp_source(server.address, link)
    remote = train_student(STUDENT, src, cfg, str(tmp_path / "tcp"))
    assert remote["weights_sha256"] == local["weights_sha256"]
    for key in ("bytes_down", "bytes_up", "bytes_eval", "test_accuracy"):
        assert remote[key] == local[key]
    log = server.wait_log(1)[0]
    # what the host's socket carried is what the device counted, to the byte
    sent, received = (int(v.replace(",", "")) for v in re.findall(r"([\d,]+) B (?:down|up)", log))
    assert sent + received == remote["bytes_down"] + remote["bytes_up"] + remote["bytes_eval"]
    assert "stop: " in log


@pytest.mark.parametrize("codec,x_codec,budget,probe", [
    ("f32", "f32", 0, 0.0), ("topk", "u8", 0, 0.0), ("topk", "u8", 40_000, 0.0),
    ("topk", "u8", 20_000, 0.3)])
def test_resume_through_a_proxy_that_cuts_and_flips_bits(server, teacher, digits, tmp_path,
                                                          codec, x_codec, budget, probe):
    """Streaming everything, and keeping a third of the split (kept samples replayed among
    streamed ones, so host batches and training steps do not line up); and probes of settled
    samples (WAKE before each epoch, HALT again after the visit)."""
    halting = HaltingConfig(eps=0.2, probe_prob=probe) if probe else HaltingConfig()
    cfg, link = cfg_for(codec=codec, x_codec=x_codec, cache_budget=budget, halting=halting)
    clean = train_student(STUDENT, tcp_source(server.address, link), cfg, str(tmp_path / "clean"))
    cut = (20_000, 60_000) if codec == "f32" else (4_000, 12_000)   # a few cuts per run
    proxy = FaultProxy(server.address, cut_bytes=cut, flip_prob=0.02, seed=1)
    try:
        src = tcp_source(proxy.address, link, timeout=1.0, retries=20)
        faulty = train_student(STUDENT, src, cfg, str(tmp_path / "faulty"))
    finally:
        proxy.close()
    assert proxy.cuts >= 3 and src.reconnects >= 3
    assert faulty["weights_sha256"] == clean["weights_sha256"]
    assert faulty["bytes_down"] >= clean["bytes_down"]


def test_device_data_mode_uploads_once_and_halting_stops_queries(server, teacher, digits, tmp_path):
    cfg, link = cfg_for(epochs=6)
    src = tcp_source(server.address, link, DeviceDataSource, data=digits, cache_budget=0)
    res = train_student(STUDENT, src, cfg, str(tmp_path / "nocache"))
    n_train = len(digits.y_train)
    assert res["bytes_eval"] == 0 and res["test_accuracy"] > 0.5
    no_cache_queries = src.queried
    src2 = tcp_source(server.address, link, DeviceDataSource, data=digits, cache_budget=1 << 20)
    res2 = train_student(STUDENT, src2, cfg, str(tmp_path / "cache"))
    assert src2.queried == n_train            # each sample uploaded exactly once
    assert no_cache_queries < res["epochs_run"] * n_train   # halting stopped re-queries
    assert res2["bytes_up"] < res["bytes_up"]
    # settled samples whose labels the device holds are still trained on (policy rehearse)
    assert sum(e["rehearsed"] for e in read_metrics(tmp_path / "cache")) > 0
    assert sum(e["rehearsed"] for e in read_metrics(tmp_path / "nocache")) == 0


@pytest.mark.parametrize("mode", ["device-data", "fetch-once"])
def test_sources_that_hold_the_data_replay_settled_samples(server, teacher, digits, tmp_path, mode):
    """Rehearse with probability 1 over samples the device holds trains on every sample every
    epoch: the weights of a run without halting, with the settled samples counted as replays."""
    def source():
        if mode == "device-data":
            return tcp_source(server.address, link, DeviceDataSource, data=digits)
        return FetchOnceSource(tcp_source(server.address, link))
    cfg, link = cfg_for(epochs=6, x_codec="f32", halting=HaltingConfig(eps=0.1))
    on = train_student(STUDENT, source(), cfg, str(tmp_path / "on"))
    off = train_student(STUDENT, source(), replace(cfg, halting=HaltingConfig(enabled=False)),
                        str(tmp_path / "off"))
    assert on["settled_fraction"] > 0.2 and on["epochs_run"] == off["epochs_run"] == 6
    assert sum(e["rehearsed"] for e in read_metrics(tmp_path / "on")) > 0
    assert on["weights_sha256"] == off["weights_sha256"]
    skip = train_student(STUDENT, source(), replace(cfg, halting=HaltingConfig(eps=0.1, policy="skip")),
                         str(tmp_path / "skip"))
    assert sum(e["rehearsed"] for e in read_metrics(tmp_path / "skip")) == 0
    assert skip["weights_sha256"] != on["weights_sha256"]


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_wrong_token_is_refused_and_the_server_carries_on(teacher, digits, tmp_path):
    s = Running(teacher, digits, token=TOKEN, auth_backoff_s=0.05)
    try:
        cfg, link = cfg_for(epochs=1)
        for token in ("wrong", None):
            with pytest.raises(HostRefused, match="authentication failed"):
                train_student(STUDENT, tcp_source(s.address, link, token=token), cfg,
                              str(tmp_path / f"r{token}"))
        ok = train_student(STUDENT, tcp_source(s.address, link, token=TOKEN), cfg,
                           str(tmp_path / "ok"))
        assert ok["epochs_run"] == 1
    finally:
        s.close()


def test_non_loopback_bind_needs_tls_and_a_token(teacher, digits):
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        SoftLabelServer(teacher, digits, "0.0.0.0", 0)
    with pytest.raises(EdgekdError, match="without TLS and a token"):
        SoftLabelServer(teacher, digits, "0.0.0.0", 0, token=TOKEN)


def raw(address):
    sock = socket.create_connection(address, timeout=5)
    ftype, _, nonce = read_one(sock)
    assert ftype == m.T.CHALLENGE and len(nonce) == m.NONCE_BYTES
    return sock


def read_one(sock):
    buf = b""
    while len(buf) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    length = struct.unpack_from("<I", buf, 6)[0]
    while len(buf) < HEADER.size + length + 4:
        chunk = sock.recv(HEADER.size + length + 4 - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return decode_frame(buf)


def error_then_closed(sock):
    ftype, _, payload = read_one(sock)
    assert ftype == m.T.ERROR
    code, text = m.unpack_error(payload)
    assert sock.recv(1) == b""
    return code, text


def hello(**over):
    body = {"proto": 2, "input_shape": [64], "num_classes": 10, "seed": 0, "batch": 32, "max_frame": 1 << 20,
            "val_fraction": 0.1, "codec": "f32", "x_codec": "f32", "k": 4}
    body.update(over)
    return m.frame(m.T.HELLO, m.pack_json(body))


@pytest.mark.parametrize("case", ["version", "oversize", "garbage", "unknown_type", "bad_hello",
                                  "shape", "codec", "proto", "ack_before_epoch"])
def test_hostile_clients_get_an_error_frame_and_a_closed_socket(server, case):
    sock = raw(server.address)
    sends = {
        "version": encode_frame(2, b"{}")[:2] + b"\x09" + encode_frame(2, b"{}")[3:],
        "oversize": b"EK\x01\x02\x00\x00" + struct.pack("<I", 0xFFFFFFF0),
        "garbage": bytes(range(256)) * 4,
        "unknown_type": hello() + m.frame(99, b""),
        "bad_hello": m.frame(m.T.HELLO, b"\xff\xff\xff\x7f{"),
        "shape": hello(input_shape=[63]),
        "codec": hello(codec="zip"),
        "proto": hello(proto=7),
        "ack_before_epoch": hello() + m.frame(m.T.ACK, m.pack_pair(0, 1)),
    }
    sock.sendall(sends[case])
    if case in ("unknown_type", "ack_before_epoch"):
        assert read_one(sock)[0] == m.T.WELCOME
    code, text = error_then_closed(sock)
    assert text and "\n" not in text
    # damaged framing may be a noisy link (the device may retry); the rest is a refusal
    assert code == (m.ERR_LINK if case in ("version", "oversize", "garbage") else m.ERR_REFUSED)
    sock.close()
    # and the server still serves a well-behaved device
    ok = raw(server.address)
    ok.sendall(hello())
    assert read_one(ok)[0] == m.T.WELCOME
    ok.close()


def test_slow_sender_and_silent_client_are_dropped(server):
    slow = raw(server.address)
    try:
        for b in hello()[:8]:
            slow.sendall(bytes([b]))
            time.sleep(0.3)
    except OSError:
        pass
    silent = raw(server.address)
    silent.sendall(hello())
    read_one(silent)
    silent.sendall(m.frame(m.T.EPOCH, m.pack_epoch(0, 0, 64)))  # then never ACK nor read
    lines = server.wait_log(2, timeout=10)  # both dropped by the server's own deadlines
    assert any("took longer" in line for line in lines)
    assert any("link lost" in line for line in lines)
    slow.close()
    silent.close()


class NaNTeacher:
    num_classes, input_shape = 10, (64,)

    def logits(self, x):
        return np.full((len(x), 10), np.nan, np.float32)


def test_teacher_nan_ends_the_session_with_one_line_on_both_sides(digits, tmp_path):
    s = Running(NaNTeacher(), digits)
    try:
        cfg, link = cfg_for(epochs=1)
        with pytest.raises(HostRefused, match="NaN"):
            train_student(STUDENT, tcp_source(s.address, link), cfg, str(tmp_path / "r"))
        assert "NaN" in s.wait_log(1)[0]
    finally:
        s.close()


def test_max_devices_counts_only_authenticated_sessions_and_says_busy(teacher, digits):
    s = Running(teacher, digits, max_devices=1)
    try:
        idle = [raw(s.address) for _ in range(3)]     # unauthenticated: they take no slot
        first = raw(s.address)
        first.sendall(hello())
        assert read_one(first)[0] == m.T.WELCOME
        second = raw(s.address)
        second.sendall(hello())
        code, text = error_then_closed(second)
        assert code == m.ERR_BUSY and "maximum of 1" in text
        for sock in idle + [first, second]:
            sock.close()
    finally:
        s.close()
