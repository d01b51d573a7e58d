"""The host's protocol state machine for one device connection: frames in, frames out.

Transport-free: the TCP server and the in-memory link drive the same object, so both carry
byte-identical traffic. Any ProtocolError or EdgekdError ends the session; the driver sends
the ERROR frame returned by `error_frame` and closes.
"""

import hmac
import os
import time

import numpy as np

from ..errors import EdgekdError
from ..source import Hello
from . import messages as m
from .admission import Busy
from .codecs import soft_codec, x_codec
from .frames import DEFAULT_MAX_PAYLOAD, ProtocolError
from .host_session import HostSession
from .messages import hello_mac
from ..order import epoch_order

MAX_WINDOW = 64


class AuthFailed(ProtocolError):
    """The device did not prove it knows the token (the server throttles its address)."""


class HostProtocol:
    """`admit(replaces) -> session token` is asked once the HELLO is valid and authenticated
    (it may raise Busy); without it every session is admitted. `max_payload` is the largest
    frame payload this host accepts, announced in WELCOME. `test_split=False` keeps the test
    split on the host. `progress_at` (monotonic) moves only when training moves."""

    def __init__(self, teacher, data, affine, token=None, admit=None,
                 max_payload=DEFAULT_MAX_PAYLOAD, test_split=True):
        self.session = HostSession(teacher, data)
        self.teacher, self.data, self.affine, self.token = teacher, data, affine, token
        self.admit, self.max_payload, self.test_split = admit, max_payload, test_split
        self.nonce = os.urandom(m.NONCE_BYTES)
        self.hello = None
        self.closed = False
        self.stream = None
        self.resume_start = None
        self.last_epoch = -1
        self.slot = None
        self.progress_at = time.monotonic()
        self.stats = {"epochs": 0, "batches": 0, "halted": 0, "stop": None}

    def _progress(self):
        self.progress_at = time.monotonic()

    def greeting(self):
        return [m.frame(m.T.CHALLENGE, self.nonce)]

    @staticmethod
    def error_frame(err):
        """ERROR with a code: link damage (the device may reconnect and resume) or refusal."""
        code = m.ERR_LINK if isinstance(err, ProtocolError) and err.retryable else m.ERR_REFUSED
        code = m.ERR_BUSY if isinstance(err, Busy) else code
        return m.frame(m.T.ERROR, m.pack_error(code, str(err)))

    def handle(self, ftype, flags, payload):
        """Frames to send in answer to one received frame: an iterable, built lazily (errors
        may surface while iterating), so a driver holds one frame at a time."""
        if self.hello is None and ftype != m.T.HELLO:
            raise ProtocolError(f"expected HELLO first, got frame type {ftype}")
        handler = {m.T.HELLO: self.on_hello, m.T.EPOCH: self.on_epoch, m.T.ACK: self.on_ack,
                   m.T.HALT: self.on_halt, m.T.WAKE: self.on_wake, m.T.FETCH: self.on_fetch,
                   m.T.QUERY: self.on_query, m.T.STOP: self.on_stop,
                   m.T.ERROR: self.on_error}.get(ftype)
        if handler is None:
            raise ProtocolError(f"unexpected frame type {ftype} from a device")
        return handler(payload)

    # -- handshake ----------------------------------------------------------------------------
    def _authenticate(self, given):
        if self.token is not None:
            want = hello_mac(self.token, self.nonce).encode()
            if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8", "replace"), want):
                raise AuthFailed("authentication failed: wrong or missing token")

    def on_hello(self, payload):
        if self.hello is not None:
            raise ProtocolError("second HELLO on one connection")
        h = m.unpack_hello(payload, self._authenticate)
        self.device_cap = h.max_frame
        self.hello = h
        self.mode, self.batch = h.mode, h.batch
        self.sc = soft_codec(h.codec, self.teacher.num_classes, h.k)
        if h.mode == "device-data":
            return self._welcome_device_data(h)
        w = self.session.open(Hello(h.seed, h.batch, h.val_fraction, h.input_shape, h.num_classes))
        self.xc = x_codec(h.x_codec, w.features, self.affine)
        self._fits("BATCH", m.batch_payload_bytes(h.batch, self.xc, self.sc), self.device_cap,
                   "the device's", 6 + self.xc.nbytes(1) + self.sc.nbytes(1), 16)
        if h.resume is not None:
            halted, epoch, start = m.unpack_resume(h.resume, h.tail, w.num_train)
            self.session.halted.assign(halted)
            self.resume_start = (epoch, start)
        info = {"num_train": w.num_train, "num_val": w.num_val, "num_test": w.num_test,
                "features": w.features, "classes": self.teacher.num_classes,
                "codec": h.codec, "x_codec": h.x_codec, "k": getattr(self.sc, "k", h.k),
                "mode": h.mode, "test_split": self.test_split, "compress": h.compress}
        return [self._welcome(info, self.affine if h.x_codec == "u8" else None)]

    def _fits(self, what, nbytes, cap, whose, per_sample, fixed):
        """Refuse a HELLO whose full batch would not fit a frame the receiver takes."""
        if nbytes > cap:
            most = max(0, (cap - fixed) // per_sample)
            raise ProtocolError(f"HELLO: a {what} of {self.batch} samples is {nbytes:,} bytes, "
                                f"over {whose} frame cap of {cap:,}: use --batch {most} or less")

    def _welcome(self, info, affine=None):
        """Admission happens here, after every check: WELCOME carries the session token."""
        info["session"] = "0" * (2 * m.SESSION_BYTES)
        info["max_frame"] = self.max_payload
        info["auth"] = self.token is not None
        size = len(m.pack_welcome(info, affine))
        if size > self.device_cap:
            raise ProtocolError(f"HELLO: the WELCOME would be {size:,} bytes, over the device's "
                                f"frame cap of {self.device_cap:,} (use another --x-codec)")
        slot = self.admit(self.hello.replaces) if self.admit else None
        info["session"] = slot.token if slot else os.urandom(m.SESSION_BYTES).hex()
        self.slot = slot
        self._progress()
        return m.frame(m.T.WELCOME, m.pack_welcome(info, affine))

    def _welcome_device_data(self, h):
        shape, classes = h.input_shape, h.num_classes
        if tuple(shape) != tuple(self.teacher.input_shape) or classes != self.teacher.num_classes:
            raise EdgekdError(f"the device's inputs {list(shape)} / {classes} classes do not "
                              f"match the teacher's {list(self.teacher.input_shape)} / "
                              f"{self.teacher.num_classes}")
        features = int(np.prod(shape))
        affine = m.unpack_affine(h.tail, features, "HELLO") if h.x_codec == "u8" else None
        self.xc = x_codec(h.x_codec, features, affine)
        self.shape = tuple(shape)
        self._fits("SOFT answer", m.ids_payload_bytes(self.batch, self.sc), self.device_cap,
                   "the device's", 4 + self.sc.nbytes(1), 4)
        self._fits("QUERY", m.ids_payload_bytes(self.batch, self.xc), self.max_payload,
                   "the host's", 4 + self.xc.nbytes(1), 4)
        info = {"num_train": 0, "num_val": 0, "num_test": 0, "features": features,
                "classes": self.teacher.num_classes, "codec": h.codec,
                "x_codec": h.x_codec, "k": getattr(self.sc, "k", 0), "mode": "device-data"}
        return [self._welcome(info)]

    # -- host-data training -------------------------------------------------------------------
    def _need_host_data(self, what):
        if self.mode != "host-data":
            raise ProtocolError(f"{what} is for host-data mode")

    def on_epoch(self, payload):
        self._need_host_data("EPOCH")
        epoch, cursor, window = m.unpack_epoch(payload)
        if self.resume_start is not None and self.resume_start[0] == epoch:
            order = epoch_order(self.session.train_ids, self.session.seed, epoch, self.resume_start[1])
        else:
            order = self.session.order(epoch)
        self.resume_start = None
        batches = -(-len(order) // self.batch)
        if cursor > batches:
            raise ProtocolError(f"EPOCH cursor {cursor} is past the epoch's {batches} batches")
        self.stream = {"epoch": epoch, "order": order, "batches": batches, "next": cursor,
                       "acked": cursor, "window": max(1, min(window, MAX_WINDOW)), "end_sent": False}
        self.stats["epochs"] += 1
        if epoch > self.last_epoch:   # a new epoch is progress; asking again for one is not
            self.last_epoch = epoch
            self._progress()
        return self._pump()

    def _pump(self):
        """Send batches while fewer than `window` are unacknowledged; EPOCH_END after the last.
        A generator: the server sends each frame before the next is built, so a session holds
        one frame at a time."""
        s = self.stream
        while s["next"] < s["batches"] and s["next"] - s["acked"] < s["window"]:
            ids = s["order"][s["next"] * self.batch:(s["next"] + 1) * self.batch]
            b = self.session.batch(ids)
            s["next"] += 1
            self.stats["batches"] += 1
            yield m.batch_frame(self.hello.compress, s["epoch"], s["next"], m.SPLIT_TRAIN, ids,
                                b.y, self.xc.encode(b.x), self.sc.encode(b.soft))
        if s["next"] == s["batches"] and not s["end_sent"]:
            s["end_sent"] = True
            yield m.frame(m.T.EPOCH_END, m.pack_pair(s["epoch"], s["batches"]))

    def _acked(self, epoch, cursor):
        s = self.stream
        if s is None or epoch != s["epoch"] or not s["acked"] < cursor <= s["next"]:
            raise ProtocolError(f"ACK for epoch {epoch} batch {cursor} that was not sent")
        s["acked"] = cursor
        self._progress()
        return self._pump()

    def on_ack(self, payload):
        self._need_host_data("ACK")
        return self._acked(*m.unpack_pair(payload, "ACK"))

    def on_halt(self, payload):
        self._need_host_data("HALT")
        epoch, cursor, ids = m.unpack_halt(payload)
        self.session.halted.halt(ids)
        self.stats["halted"] += len(ids)
        return self._acked(epoch, cursor)

    def on_wake(self, payload):
        self._need_host_data("WAKE")
        ids, _ = m.unpack_ids(payload, "WAKE")
        self.session.halted.wake(ids)
        return []

    def on_fetch(self, payload):
        """Stream the validation or test split from batch `start` on (a reconnecting device
        keeps what it already has)."""
        self._need_host_data("FETCH")
        split, start = m.unpack_fetch(payload)
        if split == m.SPLIT_TEST and not self.test_split:
            raise EdgekdError("this host keeps its test split to itself (serve --no-test-split)")
        ids = self.session.val_ids if split == m.SPLIT_VAL else np.arange(len(self.data.y_test))
        total = -(-len(ids) // self.batch)
        if start > total:
            raise ProtocolError(f"FETCH from batch {start} of {total}")
        if start < total:
            self._progress()
        return self._fetch_frames(split, ids, start, total)

    def _fetch_frames(self, split, ids, start, total):
        """The split's batches, built one at a time (teacher outputs only for what is sent)."""
        d = self.data
        for j in range(start, total):
            sl = ids[j * self.batch:(j + 1) * self.batch]
            if split == m.SPLIT_VAL:
                b = self.session.batch(sl)
                x, y, soft = b.x, b.y, self.sc.encode(b.soft)
            else:
                x, y, soft = d.x_test[sl], d.y_test[sl], None
            yield m.batch_frame(self.hello.compress, m.FETCH_EPOCH, j + 1, split, sl, y,
                                self.xc.encode(x), soft)
        yield m.frame(m.T.EPOCH_END, m.pack_pair(m.FETCH_EPOCH, total))

    # -- device-data labelling ----------------------------------------------------------------
    def on_query(self, payload):
        if self.mode != "device-data":
            raise ProtocolError("QUERY is for device-data mode")
        ids, rest = m.unpack_ids(payload, "QUERY", self.xc.nbytes)
        x = self.xc.decode(rest, len(ids))
        if not np.all(np.isfinite(x)):
            raise ProtocolError("QUERY inputs hold NaN or inf")
        soft = self.session.soft_labels(x.reshape((len(ids),) + self.shape))
        self.stats["batches"] += 1
        self._progress()
        return [m.frame(m.T.SOFT, m.pack_ids(ids, self.sc.encode(soft)))]

    # -- the end ------------------------------------------------------------------------------
    def on_stop(self, payload):
        self.stats["stop"] = m.unpack_text(payload)
        self.closed = True
        return [m.frame(m.T.BYE)]

    def on_error(self, payload):
        self.stats["stop"] = "device error: " + m.unpack_text(payload)
        self.closed = True
        return []
