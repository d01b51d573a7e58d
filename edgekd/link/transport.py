"""Transports move whole frames and count the bytes they really carried.

`SocketTransport` is TCP; `MemoryTransport` hands frames straight to a host protocol object in
the same process (the in-process link), so both paths carry identical bytes.
"""

import collections
import socket
import time

from ..errors import EdgekdError
from .frames import DEFAULT_MAX_PAYLOAD, FramingError, decode_frame, read_frame


class LinkDown(ConnectionError):
    """The connection is gone or unusable; the device may reconnect and resume."""


class SocketTransport:
    """`timeout` bounds every wait (and a peer that stops reading); once a frame has begun,
    `frame_deadline_s` bounds the whole frame, so a peer dribbling bytes cannot hold us."""

    def __init__(self, sock, timeout=30.0, max_payload=DEFAULT_MAX_PAYLOAD, frame_deadline_s=None):
        self.sock = sock
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.max_payload = max_payload
        self.frame_deadline_s = frame_deadline_s
        self.deadline = None
        self.sent = self.received = 0

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:  # includes timeouts: a peer that stopped reading
            raise LinkDown(f"send failed: {e}") from None
        self.sent += len(data)

    def _read_exact(self, n):
        chunks, got = [], 0
        while got < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise LinkDown(f"a frame took longer than {self.frame_deadline_s} s to arrive")
                self.sock.settimeout(min(self.timeout, left))
            try:
                chunk = self.sock.recv(min(n - got, 1 << 16))
            except TimeoutError:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise LinkDown(f"a frame took longer than {self.frame_deadline_s} s to arrive") from None
                raise LinkDown(f"nothing received for {self.timeout} s") from None
            except OSError as e:
                raise LinkDown(f"receive failed: {e}") from None
            if not chunk:
                raise LinkDown("the peer closed the connection")
            if self.deadline is None and self.frame_deadline_s is not None:
                self.deadline = time.monotonic() + self.frame_deadline_s
            chunks.append(chunk)
            got += len(chunk)
            self.received += len(chunk)
        return b"".join(chunks)

    def recv(self):
        """One frame as (type, flags, payload); FramingError if the stream is damaged."""
        try:
            return read_frame(self._read_exact, self.max_payload)
        finally:
            self.deadline = None
            self.sock.settimeout(self.timeout)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def dial_tcp(host, port, timeout=30.0):
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise LinkDown(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketTransport(sock, timeout)


class MemoryTransport:
    """The device's end of an in-process link to a HostProtocol."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.sent = self.received = 0
        self.inbox = collections.deque(protocol.greeting())

    def send(self, data):
        self.sent += len(data)
        ftype, flags, payload = decode_frame(data)
        try:
            self.inbox.extend(self.protocol.handle(ftype, flags, payload))
        except EdgekdError as e:  # the host's refusal travels as an ERROR frame, as on TCP
            self.inbox.append(self.protocol.error_frame(e))

    def recv(self):
        if not self.inbox:
            raise FramingError("the in-process host has nothing to send")
        data = self.inbox.popleft()
        self.received += len(data)
        return decode_frame(data)

    def close(self):
        self.inbox.clear()
