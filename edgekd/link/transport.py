"""Transports move whole frames and count the bytes they really carried.

`SocketTransport` is TCP; `MemoryTransport` hands frames straight to a host protocol object in
the same process (the in-process link), so both paths carry identical bytes.
"""

import collections
import ipaddress
import socket
import time

from ..errors import EdgekdError
from .frames import DEFAULT_MAX_PAYLOAD, FramingError, decode_frame, read_frame


def is_loopback(host):
    """True if every address `host` resolves to is a loopback address (127/8, ::1)."""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
    except (OSError, ValueError):
        return False


class LinkDown(ConnectionError):
    """The connection is gone or unusable; the device may reconnect and resume."""


class HostBusy(LinkDown):
    """The host is full or throttling this address (ERROR code 3): back off and retry."""


class SocketTransport:
    """`timeout` bounds every wait (and a peer that stops reading); once a frame has begun,
    `frame_deadline_s` bounds the whole frame, so a peer dribbling bytes cannot hold us;
    `hard_deadline` (monotonic, settable) bounds everything, e.g. the pre-authentication phase.

    `sent`/`received` count frame bytes (the payload of the link); `wire_sent`/`wire_received`
    what the socket carried, TLS records included (equal to the former without TLS)."""

    def __init__(self, sock, timeout=30.0, max_payload=DEFAULT_MAX_PAYLOAD, frame_deadline_s=None):
        self.sock = sock
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.max_payload = max_payload
        self.frame_deadline_s = frame_deadline_s
        self.deadline = self.hard_deadline = None
        self.sent = self.received = 0
        self._wire_base = (0, 0)

    def _wire(self):
        s = self.sock
        return (getattr(s, "wire_sent", self.sent), getattr(s, "wire_received", self.received))

    @property
    def wire_sent(self):
        return self._wire()[0] - self._wire_base[0]

    @property
    def wire_received(self):
        return self._wire()[1] - self._wire_base[1]

    def reset_counts(self):
        """Zero every counter (the device moves them into its totals as it goes)."""
        self.sent = self.received = 0
        self._wire_base = (0, 0)
        self._wire_base = self._wire()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:  # includes timeouts: a peer that stopped reading
            raise LinkDown(f"send failed: {e}") from None
        self.sent += len(data)

    def _read_exact(self, n):
        chunks, got = [], 0
        while got < n:
            self._arm()
            try:
                chunk = self.sock.recv(min(n - got, 1 << 16))
            except TimeoutError:
                self._check_deadlines()
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

    def _check_deadlines(self):
        now = time.monotonic()
        if self.hard_deadline is not None and now >= self.hard_deadline:
            raise LinkDown("the handshake took too long")
        if self.deadline is not None and now >= self.deadline:
            raise LinkDown(f"a frame took longer than {self.frame_deadline_s} s to arrive")

    def _arm(self):
        """Set the socket timeout to the nearest of idle timeout and deadlines."""
        ends = [d for d in (self.deadline, self.hard_deadline) if d is not None]
        if ends:
            self._check_deadlines()
            self.sock.settimeout(min(self.timeout, min(ends) - time.monotonic()))

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


def dial_tcp(host, port, timeout=30.0, tls=None, max_payload=DEFAULT_MAX_PAYLOAD):
    """Connect to a host; with `tls` (a ClientTls) run the TLS handshake and check the pin."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise LinkDown(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return SocketTransport(sock, timeout, max_payload)
    import ssl

    from .tls import TlsChannel, TlsError
    ch = TlsChannel(sock, tls.ctx, server_side=False,
                    server_hostname=None if tls.pin else host)
    try:
        ch.handshake(time.monotonic() + timeout)
        tls.check_peer(ch)
    except ssl.SSLCertVerificationError as e:
        sock.close()
        raise TlsError(f"TLS: the host {host}:{port} failed verification against --tls-ca: "
                       f"{e.verify_message or e.reason}") from None
    except (OSError, ssl.SSLError) as e:  # a plain-TCP host, a reset: maybe not up yet
        sock.close()
        raise LinkDown(f"TLS handshake with {host}:{port} failed: {getattr(e, 'reason', None) or e}") from None
    except BaseException:
        sock.close()
        raise
    return SocketTransport(ch, timeout, max_payload)  # wire counts include the handshake


class MemoryTransport:
    """The device's end of an in-process link to a HostProtocol."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.sent = self.received = 0
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.inbox = collections.deque(protocol.greeting())

    wire_sent = property(lambda self: self.sent)
    wire_received = property(lambda self: self.received)

    def reset_counts(self):
        self.sent = self.received = 0

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
