"""The host's TCP server: one thread per device session, each its own HostProtocol.

A session that misbehaves (bad frames, wrong token, slow or silent peer, a teacher that
emits NaN) gets an ERROR frame and a closed socket; the other sessions carry on. Admission
(admission.py) keeps unauthenticated connections to a small budget and a short deadline, so
they cannot take the slots of real devices; a session that makes no training progress for
`idle_timeout_s` is closed whatever else it sends.
"""

import errno
import socket
import threading
import time

from ..errors import EdgekdError
from . import messages as m
from .admission import Admission, Busy
from .codecs import affine8_params
from .frames import DEFAULT_MAX_PAYLOAD
from .host_protocol import AuthFailed, HostProtocol
from .limits import fit_fd_limit
from .tokens import check_token
from .transport import LinkDown, SocketTransport, is_loopback


class LockedTeacher:
    """Sessions share one teacher; its layers keep per-call buffers, so calls take turns."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.num_classes, self.input_shape = teacher.num_classes, teacher.input_shape
        self.lock = threading.Lock()

    def logits(self, x):
        with self.lock:
            return self.teacher.logits(x)


def resolve(host):
    """The address family and address `host` names (IPv4 or IPv6 literal, or a name)."""
    try:
        info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return socket.AF_INET, None
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr[0]


class SoftLabelServer:
    """`tls` is an ssl.SSLContext (tls.server_context) or None; off loopback both it and a
    strong token are required. `max_pending` bounds connections that have not yet sent a
    valid, authenticated HELLO; each gets `handshake_timeout_s` for TLS and HELLO together.
    Failed authentications cost the address `auth_backoff_s`·2^(n−1) seconds of refusals."""

    def __init__(self, teacher, data, host="127.0.0.1", port=0, token=None, max_devices=8,
                 idle_timeout_s=60.0, frame_deadline_s=30.0, max_payload=DEFAULT_MAX_PAYLOAD,
                 log=None, tls=None, weak_token=False, max_pending=16, handshake_timeout_s=10.0,
                 auth_backoff_s=1.0, test_split=True):
        loopback = is_loopback(host)
        if not loopback and not (token and tls is not None):
            raise EdgekdError(f"refusing to listen on {host} without TLS and a token: give "
                              f"--tls-cert/--tls-key and --token (only loopback may go without)")
        if token:
            check_token(token, weak_token)
        self.log = log or (lambda line: None)
        self.teacher, self.data, self.token = LockedTeacher(teacher), data, token or None
        self.tls, self.test_split = tls, test_split
        self.affine = affine8_params(data.x_train)
        max_devices = fit_fd_limit(max_devices, max_pending, self.log)
        self.max_devices = max_devices
        self.admission = Admission(max_devices, max_pending, auth_backoff_s, log=self.log)
        self.idle_timeout_s, self.frame_deadline_s = idle_timeout_s, frame_deadline_s
        self.handshake_timeout_s = handshake_timeout_s
        self.max_payload = max_payload
        self.stopping = threading.Event()
        self.live, self.live_lock = {}, threading.Lock()   # session socket -> its thread
        self.next_id = 0
        self.open_warning = None
        if loopback and not token:
            self.open_warning = ("no --token: any local user can connect and read the training "
                                 "data, " + ("the test split, " if test_split else "")
                                 + "and the teacher's outputs")
        family, addr = resolve(host)
        try:
            self.sock = socket.create_server((addr or host, port), family=family)
        except OSError as e:
            raise EdgekdError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.address = self.sock.getsockname()[:2]

    def serve_forever(self):
        self.sock.settimeout(0.2)
        pause = 0.05
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if self.stopping.is_set():
                    break
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: keep the sessions we have, try again a bit later
                    self.log(f"accept: {e.strerror}; backing off {pause:g} s")
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            pause = 0.05
            self.next_id += 1
            session = DeviceSession(self, conn, addr, self.next_id)
            thread = threading.Thread(target=session.run, daemon=True,
                                      name=f"edgekd-session-{self.next_id}")
            with self.live_lock:
                self.live[conn] = thread
            try:
                thread.start()
            except RuntimeError:  # cannot start a thread: treat like the fd limit
                with self.live_lock:
                    self.live.pop(conn, None)
                self.admission.leave_pending(session.ticket)
                conn.close()
                time.sleep(pause)

    def shutdown(self, grace_s=5.0):
        """Stop listening and end every session: shutting its socket down wakes a thread that
        waits in a TLS handshake, a recv or a send at once; wait for them `grace_s` at most
        (they are daemon threads, so the process never waits on a stuck one)."""
        self.stopping.set()
        self.sock.close()
        with self.live_lock:
            live = list(self.live.items())
        for conn, _ in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        end = time.monotonic() + grace_s
        for _, thread in live:
            if thread.ident is not None:
                thread.join(max(0.0, end - time.monotonic()))

    @staticmethod
    def _describe(proto):
        h = proto.hello
        return (f"authenticated, {h.mode}, batch {h.batch}, codec {h.codec}/{h.x_codec}"
                + (", resuming" if h.resume or h.replaces else ""))

    def _refuse(self, t, err):
        if t is None:
            return
        try:
            t.send(HostProtocol.error_frame(err if isinstance(err, EdgekdError) else EdgekdError(err)))
        except (LinkDown, OSError):
            pass
        t.close()

    def _log(self, sid, peer, proto, t, started, outcome):
        s = proto.stats if proto else {"epochs": 0, "batches": 0, "halted": 0}
        sent, received = (t.sent, t.received) if t else (0, 0)
        wire = ""
        if t is not None and self.tls is not None:
            wire = f" (socket with TLS: {t.wire_sent:,} B down / {t.wire_received:,} B up)"
        self.log(m.escape_text(
            f"session {sid} {peer}: {s['epochs']} epoch requests, {s['batches']} batches, "
            f"{s['halted']} halted, {sent:,} B down / {received:,} B up{wire}, "
            f"{time.monotonic() - started:.1f} s, {outcome}"))


class DeviceSession:
    """One device connection, from accept to close, on its own thread: TLS, throttling,
    the HostProtocol conversation, then one log line with what it carried and why it ended."""

    def __init__(self, server, conn, addr, sid):
        self.srv, self.conn, self.sid, self.ip = server, conn, sid, addr[0]
        self.peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        self.t, self.channel, self.proto = None, conn, None
        self.authenticated = False
        self.replaced = threading.Event()
        self.started = time.monotonic()
        self.ticket = server.admission.enter_pending(self.ip, self._drop)  # may evict another

    def _drop(self):
        """From the accept loop: this connection waited longest before authenticating while
        the pre-authentication budget was full; close it (no ERROR: it has not spoken yet)."""
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self):
        srv, outcome = self.srv, None
        try:
            outcome = self._serve()
        except LinkDown as e:
            outcome = ("replaced by a reconnect of the same run" if self.replaced.is_set()
                       else f"link lost: {e}")
        except AuthFailed as e:
            srv.admission.failed(self.ip)
            srv._refuse(self.t, e)
            outcome = f"error: {e}"
        except EdgekdError as e:
            srv._refuse(self.t, e)
            outcome = f"{'busy' if isinstance(e, Busy) else 'error'}: {e}"
        except Exception as e:  # noqa: BLE001 - one session's bug must not stop the server
            outcome = f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"
            srv._refuse(self.t, EdgekdError(outcome))
        finally:
            self._close(outcome)

    def _serve(self):
        """TLS (if any), the throttle check, then the conversation; returns the outcome."""
        srv, conn = self.srv, self.conn
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = self.started + srv.handshake_timeout_s
        if srv.tls is not None:
            from .tls import TlsChannel
            self.channel = TlsChannel(conn, srv.tls, server_side=True)
            try:
                self.channel.handshake(deadline)
            except OSError as e:  # ssl.SSLError is one: a plain client, a scanner
                return f"TLS handshake failed: {getattr(e, 'reason', None) or e}"
        t = self.t = SocketTransport(self.channel, srv.idle_timeout_s, srv.max_payload,
                                     srv.frame_deadline_s)
        t.hard_deadline = deadline
        wait = srv.admission.throttled(self.ip)
        if wait:
            srv._refuse(t, Busy(f"too many failed authentications from {self.ip}; retry in "
                                f"{wait:.0f} s"))
            return "refused: address throttled"
        self.proto = HostProtocol(srv.teacher, srv.data, srv.affine, srv.token, self._admit,
                                  srv.max_payload, srv.test_split)
        self._converse(t, self.proto)
        return f"stop: {self.proto.stats['stop']}"

    def _converse(self, t, proto):
        """Frames in, frames out, until the protocol closes; the session leaves the pending
        budget once its HELLO is accepted, and ends if training stops moving."""
        srv = self.srv
        for f in proto.greeting():
            t.send(f)
        while not proto.closed:
            ftype, flags, payload = t.recv()
            for f in proto.handle(ftype, flags, payload):
                t.send(f)
            if not self.authenticated and proto.hello is not None:
                self.authenticated = True
                t.hard_deadline = None
                srv.admission.leave_pending(self.ticket)
                srv.log(f"session {self.sid} {self.peer}: {srv._describe(proto)}")
            if time.monotonic() - proto.progress_at > srv.idle_timeout_s:
                # closed without an ERROR, as a silent peer is: a real device that stalled
                # reconnects and resumes (within its retries); a hog just loses its slot
                raise LinkDown(f"no training progress for {srv.idle_timeout_s:g} s")

    def _admit(self, replaces):
        return self.srv.admission.admit(self.ip, self.sid, self.peer, replaces, self._evict)

    def _evict(self):
        """From another thread: wake the stale session, let it close itself."""
        self.replaced.set()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _close(self, outcome):
        srv, t, channel = self.srv, self.t, self.channel
        # both idempotent; the protocol holds the slot from the moment its HELLO is admitted,
        # so one whose WELCOME never went out is released too
        srv.admission.leave_pending(self.ticket)
        if self.proto is not None and self.proto.slot is not None:
            srv.admission.release(self.proto.slot)
        heard = getattr(channel, "wire_received", None) if channel is not self.conn else None
        heard = heard if heard is not None else (t.received if t else 0)
        if outcome is not None and heard:  # a port probe that sent nothing is not news
            srv._log(self.sid, self.peer, self.proto, t, self.started, outcome)
        if t is not None:
            t.close()
        else:
            self.conn.close()
        with srv.live_lock:
            srv.live.pop(self.conn, None)
