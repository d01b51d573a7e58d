"""The host's TCP server: one thread per device session, each its own HostProtocol.

A session that misbehaves (bad frames, wrong token, slow or silent peer, a teacher that
emits NaN) gets an ERROR frame and a closed socket; the other sessions carry on.
"""

import ipaddress
import socket
import threading
import time

from ..errors import EdgekdError
from .codecs import affine8_params
from .frames import DEFAULT_MAX_PAYLOAD
from .host_protocol import HostProtocol
from .transport import LinkDown, SocketTransport


class LockedTeacher:
    """Sessions share one teacher; its layers keep per-call buffers, so calls take turns."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.num_classes, self.input_shape = teacher.num_classes, teacher.input_shape
        self.lock = threading.Lock()

    def logits(self, x):
        with self.lock:
            return self.teacher.logits(x)


def is_loopback(host):
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class Server:
    def __init__(self, teacher, data, host="127.0.0.1", port=0, token=None, max_devices=8,
                 idle_timeout_s=60.0, frame_deadline_s=30.0, max_payload=DEFAULT_MAX_PAYLOAD,
                 log=None):
        if not is_loopback(host) and not token:
            raise EdgekdError(f"refusing to listen on {host} without --token: only loopback "
                              f"addresses may be served without authentication")
        self.teacher, self.data, self.token = LockedTeacher(teacher), data, token
        self.affine = affine8_params(data.x_train)
        self.slots = threading.BoundedSemaphore(max_devices)
        self.max_devices = max_devices
        self.idle_timeout_s, self.frame_deadline_s = idle_timeout_s, frame_deadline_s
        self.max_payload = max_payload
        self.log = log or (lambda line: None)
        self.stopping = threading.Event()
        self.next_id = 0
        try:
            self.sock = socket.create_server((host, port), reuse_port=False)
        except OSError as e:
            raise EdgekdError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.address = self.sock.getsockname()[:2]

    def serve_forever(self):
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            self.next_id += 1
            threading.Thread(target=self.session, args=(conn, addr, self.next_id),
                             daemon=True, name=f"edgekd-session-{self.next_id}").start()

    def shutdown(self):
        self.stopping.set()
        self.sock.close()

    def session(self, conn, addr, sid):
        peer = f"{addr[0]}:{addr[1]}"
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = SocketTransport(conn, self.idle_timeout_s, self.max_payload, self.frame_deadline_s)
        proto = HostProtocol(self.teacher, self.data, self.affine, self.token)
        started, outcome = time.monotonic(), "closed"
        if not self.slots.acquire(blocking=False):
            self._refuse(t, proto, f"the host is serving its maximum of {self.max_devices} devices")
            self.log(f"session {sid} {peer}: refused, {self.max_devices} devices already connected")
            return
        try:
            for f in proto.greeting():
                t.send(f)
            while not proto.closed:
                ftype, flags, payload = t.recv()
                for f in proto.handle(ftype, flags, payload):
                    t.send(f)
            outcome = f"stop: {proto.stats['stop']}"
        except LinkDown as e:
            outcome = f"link lost: {e}"
        except EdgekdError as e:
            self._refuse(t, proto, e)
            outcome = f"error: {e}"
        except Exception as e:  # noqa: BLE001 - one session's bug must not stop the server
            outcome = f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"
            self._refuse(t, proto, EdgekdError(outcome))
        finally:
            self.slots.release()
            self._log(sid, peer, proto, t, started, outcome)
            t.close()

    def _refuse(self, t, proto, err):
        try:
            t.send(proto.error_frame(err if isinstance(err, EdgekdError) else EdgekdError(err)))
        except (LinkDown, OSError):
            pass
        t.close()

    def _log(self, sid, peer, proto, t, started, outcome):
        s = proto.stats
        self.log(f"session {sid} {peer}: {s['epochs']} epoch requests, {s['batches']} batches, "
                 f"{s['halted']} halted, {t.sent:,} B down / {t.received:,} B up, "
                 f"{time.monotonic() - started:.1f} s, {outcome}")
