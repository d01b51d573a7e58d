"""The emulator's serial side: reads COBS packets from the pty, answers each request once
(a resend with the same sequence number and bytes gets the cached reply, as the C firmware
does), NAKs damaged packets, and injects faults."""

import os
import select
import sys
import zlib

from edgekd.link.frames import FramingError, ProtocolError

from .. import messages as m
from ..framing import Deframer, looks_like_frame, pack
from .board import Refusal


class Server:
    def __init__(self, board, fd, faults=None, log=None):
        self.board, self.fd, self.faults = board, fd, faults
        self.log = log
        self.deframer = Deframer(board.spec.max_payload)
        self.last_key = self.last_reply = None
        self.stopped = False

    def _send(self, wire):
        if self.faults is not None:
            if self.faults.drop():
                return
            wire = self.faults.corrupt(wire[:-1]) + wire[-1:]
        view = memoryview(wire)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def _nak(self, why):
        self._send(pack(m.BOARD_ERROR, m.with_seq(m.NO_SEQ, bytes([m.E_DAMAGED]) + why.encode())))

    def feed(self, data):
        for raw in self.deframer.packets(data):
            if raw is not None and self.faults is not None:
                if self.faults.drop():
                    continue
                raw = self.faults.corrupt(raw)
            event = self.deframer.decode(raw)
            if event is None:
                continue
            if isinstance(event, FramingError):
                if looks_like_frame(raw):
                    self._nak(str(event)[:64])
                continue
            self.request(*event)

    def request(self, ftype, payload):
        try:
            seq, body = m.split_seq(payload)
        except (FramingError, ProtocolError):
            self._nak("frame has no sequence number")
            return
        key = (seq, ftype, zlib.crc32(payload))
        if key == self.last_key:
            self._send(self.last_reply)  # a resend: replay, do not act twice
            return
        try:
            rtype, rbody = self.board.handle(ftype, body)
        except Refusal as e:
            rtype, rbody = m.BOARD_ERROR, bytes([e.code]) + str(e).encode()[:1000]
        except Exception as e:  # noqa: BLE001 - a bug must not take the board down
            text = f"internal error: {type(e).__name__}: {e}"
            rtype, rbody = m.BOARD_ERROR, bytes([m.E_REFUSED]) + text.encode()[:1000]
        if self.log:
            self.log(f"{m.NAMES.get(ftype, hex(ftype))} seq {seq} -> "
                     f"{'ok' if rtype != m.BOARD_ERROR else 'refused: ' + rbody[1:].decode()}")
        self.last_key, self.last_reply = key, pack(rtype, m.with_seq(seq, rbody))
        self._send(self.last_reply)

    def serve_forever(self):
        """Until `stopped` is set (checked every 0.2 s)."""
        while not self.stopped:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:  # EIO while no one has the port open: wait for the next host
                select.select([], [], [], 0.05)
                continue
            if data:
                self.feed(data)


def serve(board, fd, faults=None, verbose=False):
    log = (lambda msg: print(f"board: {msg}", file=sys.stderr, flush=True)) if verbose else None
    Server(board, fd, faults, log).serve_forever()
