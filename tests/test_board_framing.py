"""Serial framing, messages and the request/response layer, without a board process."""

import os
import struct
import threading
import time

import numpy as np
import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.link.frames import FramingError, ProtocolError, encode_frame
from firmware_bridge import messages as m
from firmware_bridge.emulator.board import Refusal
from firmware_bridge.emulator.server import Server
from firmware_bridge.framing import Deframer, pack
from firmware_bridge.protocol import BoardClient, BoardError, BoardTimeout
from firmware_bridge.transport import PortError, SerialLink

frames = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=700)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(frames, st.data())
def test_frames_survive_any_chunking(items, data):
    wire = b"".join(pack(t, p) for t, p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    d, got = Deframer(), []
    for a, b in zip([0, *cuts], [*cuts, len(wire)]):
        got += d.feed(wire[a:b])
    assert got == items


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255), st.binary(max_size=300))
def test_resync_after_garbage(garbage, ftype, payload):
    """Whatever precedes it, a delimiter and a whole frame come out as that frame."""
    events = Deframer().feed(garbage + b"\x00" + pack(ftype, payload))
    assert events[-1] == (ftype, payload)
    assert all(isinstance(e, FramingError) for e in events[:-1])


def test_damaged_and_overlong_packets_are_reported_and_skipped():
    good = pack(5, b"hello")
    bad = bytearray(good)
    bad[3] ^= 0x10
    d = Deframer(max_payload=64)
    events = d.feed(bytes(bad) + b"\x07" * 500 + b"\x00" + good)
    assert isinstance(events[0], FramingError) and isinstance(events[1], FramingError)
    assert "discarded" in str(events[1])
    assert events[2] == (5, b"hello")
    assert len(d.buf) == 0


def test_zero_free_encoding_matches_cobs_package():
    frame = encode_frame(0x24, bytes(range(256)) * 3)
    assert pack(0x24, bytes(range(256)) * 3) == cobs.encode(frame) + b"\x00"
    assert b"\x00" not in pack(0x24, bytes(512))[:-1]


def test_info_layout_round_trips_and_matches_the_document():
    info = m.BoardInfo(1, m.FORMAT_EKB, m.FLAG_MODEL, 1, 2, 3, 4, 5, 6, 7, 8, bytes(range(32)),
                       m.DT_I8, m.DT_F32, 64, 0.5, -128, 10, 0.25, 3, 32, 10, "board-x")
    raw = info.pack()
    assert len(raw) == 105 + len("board-x")
    assert m.BoardInfo.unpack(raw) == info
    assert struct.unpack_from("<I", raw, 72)[0] == 64 and raw[104] == 7
    with pytest.raises(ProtocolError):
        m.BoardInfo.unpack(raw[:-1])


def test_train_request_round_trips():
    b = m.TrainBatch(0.1, 4.0, 0.9, m.DT_I8, np.array([1, 2], np.uint16),
                     np.arange(8, dtype=np.int8).reshape(2, 4),
                     np.arange(6, dtype=np.float32).reshape(2, 3))
    raw = m.pack_train(b)
    assert len(raw) == m.train_request_size(2, 4, m.DT_I8, 3)
    back = m.unpack_train(raw, 4, 3)
    assert back.lr == pytest.approx(0.1) and back.dtype == m.DT_I8
    np.testing.assert_array_equal(back.x, b.x)
    np.testing.assert_array_equal(back.teacher, b.teacher)
    with pytest.raises(ProtocolError):
        m.unpack_train(raw[:-1], 4, 3)


def test_serial_link_over_loop_url_skips_garbage():
    link = SerialLink("loop://")
    link._write(b"\x13\x37garbage\x00")
    link.send(0x21, b"\x01\x02")
    deadline = time.monotonic() + 2
    first = link.recv(deadline)
    assert isinstance(first, FramingError)
    assert link.recv(deadline) == (0x21, b"\x01\x02")
    assert link.recv(time.monotonic() + 0.05) is None
    assert link.sent == link.received
    link.close()


def test_unopenable_port_is_a_one_line_error():
    with pytest.raises(PortError, match="cannot open serial port /nonexistent/tty"):
        SerialLink("/nonexistent/tty")


class EchoBoard:
    """A board for the protocol layer: INFO answers, RESET refuses, counts what it ran."""

    def __init__(self):
        self.spec = type("S", (), {"max_payload": 4096})()
        self.ran = 0

    def handle(self, ftype, body):
        self.ran += 1
        if ftype == m.RESET:
            raise Refusal(m.E_REFUSED, "not today")
        return ftype | m.REPLY, body[::-1]


class FlakyWire:
    """Between a client's link and a Server: drops or damages chosen frames."""

    def __init__(self, server, drop_replies=(), damage_requests=()):
        self.server, self.url = server, "test://flaky"
        self.drop_replies, self.damage_requests = set(drop_replies), set(damage_requests)
        self.sent_frames = 0
        self.inbox = []
        self.sent = self.received = 0
        server._send = self._to_client
        self.deframer = Deframer()

    def _to_client(self, wire):
        if self.sent_frames in self.drop_replies:
            return
        self.inbox += self.deframer.feed(wire)

    def send(self, ftype, payload):
        wire = pack(ftype, payload)
        if self.sent_frames in self.damage_requests:  # one flipped bit, no new delimiter
            i = next(i for i in range(5, len(wire)) if wire[i] > 1)
            wire = wire[:i] + bytes([wire[i] ^ 1]) + wire[i + 1:]
        self.server.feed(wire)
        self.sent_frames += 1

    def recv(self, deadline):
        return self.inbox.pop(0) if self.inbox else None

    def discard_input(self):
        self.inbox.clear()


def test_resend_after_lost_reply_replays_without_acting_twice():
    board = EchoBoard()
    wire = FlakyWire(Server(board, fd=-1), drop_replies={0})
    client = BoardClient(wire, timeout=0.01, retries=2)
    assert client.request(m.INFO, b"abc") == b"cba"
    assert board.ran == 1 and client.resends == 1


def test_damaged_request_gets_a_nak_and_is_resent_at_once():
    board = EchoBoard()
    wire = FlakyWire(Server(board, fd=-1), damage_requests={0})
    client = BoardClient(wire, timeout=5.0, retries=2)
    assert client.request(m.INFO, b"xy") == b"yx"
    assert board.ran == 1 and client.resends == 1


def test_refusal_and_timeout_are_one_line_errors():
    board = EchoBoard()
    wire = FlakyWire(Server(board, fd=-1), drop_replies={0, 1, 2})
    client = BoardClient(wire, timeout=0.01, retries=2)
    with pytest.raises(BoardTimeout, match=r"did not answer INFO after 3 tries"):
        client.request(m.INFO)
    with pytest.raises(BoardError, match="board refused RESET: not today") as e:
        client.request(m.RESET, b"\x00")
    assert e.value.code == m.E_REFUSED


def test_client_against_a_real_pty_server():
    """The emulator's server loop on a pseudo-terminal, driven through pyserial."""
    from firmware_bridge.emulator.pty_port import open_pty
    master, slave, path = open_pty()
    server = Server(EchoBoard(), master)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    link = SerialLink(path)
    try:
        link._write(os.urandom(200).replace(b"\x00", b"\x01"))  # garbage, then a request
        client = BoardClient(link, timeout=1.0, retries=3)
        payload = bytes(range(1, 250)) * 8
        assert client.request(m.INFO, payload) == payload[::-1]
    finally:
        link.close()
        server.stopped = True
        t.join()
        os.close(master)
        os.close(slave)


def test_board_protocol_doc_layouts():
    """docs/protocol.md section 11, re-derived with struct and compared to the packers."""
    from firmware_bridge import ekb
    assert [m.INFO, m.DEPLOY_BEGIN, m.DEPLOY_CHUNK, m.DEPLOY_END, m.INFER, m.TRAIN_LAST,
            m.GET_WEIGHTS, m.RESET, m.SET_WEIGHTS] == list(range(0x20, 0x29))
    assert (m.BOARD_ERROR, m.REPLY, m.NO_SEQ) == (0x7F, 0x80, 0xFFFF)
    assert (m.E_DAMAGED, m.E_REFUSED, m.E_NO_FIT, m.E_CHUNK_CRC, m.E_HASH, m.E_NO_MODEL,
            m.E_BUSY, m.E_FAULT) == tuple(range(1, 9))
    assert (m.FORMAT_TFLITE, m.FORMAT_EKB, m.DT_F32, m.DT_I8) == (1, 2, 0, 1)
    info = m.BoardInfo(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, b"S" * 32, 1, 0, 64, 0.5, -3, 10,
                       0.25, 7, 32, 10, "nm")
    assert info.pack() == (struct.pack("<HBBIIIIIIII", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
                           + b"S" * 32 + struct.pack("<BBHIfiIfiIIB", 1, 0, 0, 64, 0.5, -3, 10,
                                                     0.25, 7, 32, 10, 2) + b"nm")
    assert m.DEPLOY_BEGIN_S.pack(9, 2, b"H" * 32) == struct.pack("<IB3x", 9, 2) + b"H" * 32
    x = np.array([[1, -2]], np.int8)
    assert m.pack_infer(m.DT_I8, x) == struct.pack("<BBH", 1, 0, 1) + x.tobytes()
    y = np.array([[5, 6, 7]], np.int8)
    assert m.pack_infer_reply(m.DT_I8, y, 0.5, -1) == \
        struct.pack("<BBHHHfi", 1, 0, 1, 3, 0, 0.5, -1) + y.tobytes()
    b = m.TrainBatch(0.5, 4.0, 0.9, m.DT_I8, np.array([3], np.uint16), x,
                     np.array([[1.0, 2.0, 3.0]], np.float32))
    assert m.pack_train(b) == (struct.pack("<fffBBH", 0.5, 4.0, 0.9, 1, 0, 1)
                               + struct.pack("<H", 3) + x.tobytes() + struct.pack("<3f", 1, 2, 3))
    assert m.pack_train_reply(1.5, [0.25], [1]) == struct.pack("<fHHfB", 1.5, 1, 0, 0.25, 1)
    assert m.WEIGHTS_REQ.pack(8, 100) == struct.pack("<IH", 8, 100)
    assert m.WEIGHTS_REPLY_HEAD.size == 16
    assert ekb.HEADER.size == 16 and ekb.LAYER.size == 32
    assert ekb.HEADER.pack(b"EKB1", 2, 1, 1, 0.5, -128)[:8] == b"EKB1\x02\x01\x01\x00"
