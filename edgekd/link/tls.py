"""TLS for the TCP link, with the standard library's `ssl` only (the device path imports this).

`TlsChannel` runs TLS over a plain socket through memory BIOs instead of wrapping the socket,
so it can count what the socket really carried (records, handshake and all) next to the
payload bytes the transport counts. The device pins the host by a CA file or by the SHA-256
fingerprint of its certificate; the host's token, sent inside TLS, authenticates the device.
"""

import hashlib
import hmac
import ssl
import time

from ..errors import EdgekdError


class TlsError(EdgekdError):
    """TLS could not be set up as asked (files, pins): reconnecting will not cure it."""


def fingerprint(der):
    """SHA-256 of a DER certificate as colon-separated upper-case hex (as `openssl x509
    -fingerprint -sha256` prints it)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def normalize_fingerprint(text):
    """Accepts `AB:CD:...`, `abcd...` or `sha256:...`; 64 hex digits or TlsError."""
    h = text.strip().lower()
    h = h.removeprefix("sha256:").removeprefix("sha256=").replace(":", "")
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise TlsError(f"--tls-fingerprint must be a SHA-256 fingerprint (64 hex digits), "
                       f"got {text[:80]!r}")
    return h


def server_context(cert_path, key_path):
    """The host's context: TLS 1.2 or later, its certificate and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except FileNotFoundError as e:
        raise TlsError(f"TLS: {e.filename}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise TlsError(f"TLS: cannot load certificate {cert_path} / key {key_path}: "
                       f"{getattr(e, 'reason', None) or e}") from None
    return ctx


class ClientTls:
    """The device's TLS settings: a CA file (chain and host name checked) or a pinned
    certificate fingerprint (exactly that certificate, whatever its name)."""

    def __init__(self, ca_path=None, fingerprint_hex=None):
        if bool(ca_path) == bool(fingerprint_hex):
            raise TlsError("give exactly one of --tls-ca and --tls-fingerprint")
        self.pin = normalize_fingerprint(fingerprint_hex) if fingerprint_hex else None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_path:
            try:
                ctx.load_verify_locations(cafile=ca_path)
            except FileNotFoundError:
                raise TlsError(f"TLS: {ca_path}: no such file") from None
            except (ssl.SSLError, OSError) as e:
                raise TlsError(f"TLS: cannot read CA file {ca_path}: {getattr(e, 'reason', None) or e}") from None
        else:  # the pin is the whole check, done after the handshake
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.ctx = ctx

    def check_peer(self, channel):
        if self.pin is None:
            return
        der = channel.obj.getpeercert(binary_form=True)
        got = hashlib.sha256(der or b"").hexdigest()
        if not hmac.compare_digest(got, self.pin):
            raise TlsError(f"TLS: the host's certificate has fingerprint {fingerprint(der or b'')}, "
                           f"not the pinned one: refusing to talk to it")


class TlsChannel:
    """A socket-like object (sendall, recv, settimeout, shutdown, close) that speaks TLS over
    `sock` and counts the bytes the socket carried in `wire_sent` / `wire_received`."""

    def __init__(self, sock, ctx, server_side, server_hostname=None):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)
        self.wire_sent = self.wire_received = 0
        self.eof = False

    def settimeout(self, t):
        self.sock.settimeout(t)

    def handshake(self, deadline):
        """Complete the TLS handshake by `deadline` (monotonic), or raise OSError/SSLError."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("TLS handshake took too long") from None
                self.sock.settimeout(left)
                self._fill()
        self._flush()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)
            self.wire_sent += len(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            self.incoming.write_eof()
            self.eof = True
            raise ConnectionResetError("the peer closed the connection during TLS")
        self.wire_received += len(chunk)
        self.incoming.write(chunk)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            view = view[n:]
            self._flush()

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                try:
                    self._fill()
                except ConnectionResetError:
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def shutdown(self, how):
        try:
            self.obj.unwrap()
            self._flush()
        except (ssl.SSLError, OSError):
            pass
        self.sock.shutdown(how)

    def close(self):
        self.sock.close()
