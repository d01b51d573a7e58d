"""The device's soft-label source over a link (TCP or in-process): handshake, streaming,
halting reports, and transparent reconnect-and-resume after a dropped or damaged connection.

The device is the authority on its own progress: on reconnect it tells the host the halted
set (now, and as it was when the epoch began) and the cursor it has trained through, and the
host replays the epoch from there in the same order. Weights end up as if nothing happened.

Reconnecting is bounded by `retries` link failures in a row *without progress* (a trained
batch, a fetched batch, an answered query), however often the handshake itself succeeds; the
first connection is retried the same way, and so is a host that answers "busy".
"""

import time

import numpy as np

from ..errors import EdgekdError
from ..source import Batch, HaltedSet, SoftLabelSource, Welcome
from . import messages as m
from .codecs import RowCodec, soft_codec, x_codec
from .frames import DEFAULT_MAX_PAYLOAD, ProtocolError
from .settings import LinkConfig
from .transport import HostBusy, LinkDown

TRAIN, EVAL = "train", "eval"   # which byte counters a transfer goes to (eval: the test split)


class HostRefused(EdgekdError):
    """The host answered with an ERROR that reconnecting will not cure."""

    def __init__(self, reason, peer="host"):
        super().__init__(f"{peer} refused: {reason}" if peer else reason)
        self.reason = reason


class LinkSource(SoftLabelSource):
    resumable = True   # the host keeps the halted set and the epoch order
    peer = "host"      # who refusals are attributed to (None: the host is this process)
    mode = "host-data"

    def __init__(self, dial, codec="f32", x_codec="f32", k=4, token=None, window=4,
                 retries=8, backoff_s=0.1, log=None, max_payload=DEFAULT_MAX_PAYLOAD,
                 max_backoff_s=10.0, compress="none"):
        self.dial = dial
        self.codec, self.x_codec, self.k, self.token = codec, x_codec, k, token
        self.compress = compress
        self.window, self.retries, self.backoff_s = window, retries, backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_payload = max_payload
        self.log = log or (lambda msg: None)
        self.t = None
        self.bytes_down = self.bytes_up = self.bytes_eval = 0
        self.bytes_wire = 0          # what the socket carried, TLS included, all traffic
        self.reconnects = 0
        self.strikes = 0             # link failures since the last progress
        self.session_token = None    # from WELCOME: proves a reconnect is this run
        self.said_no_auth = False    # the "host asks for no token" note, said once
        self.epoch_no, self.cursor = -1, 0
        self.hello = None
        self.halted = None

    # -- connection ---------------------------------------------------------------------------
    def open(self, hello):
        """Handshake. A device resuming from its checkpoint sends its halted set right away."""
        self.hello = hello
        self.halted = None
        if len(hello.halted):
            self.halted = HaltedSet(hello.num_train, hello.halted)
            self.start_halted = self.halted.copy()
        self._connect_retrying("first connection")
        if self.halted is None:
            self.halted = HaltedSet(self.info["num_train"])
            self.start_halted = self.halted.copy()
        return Welcome(self.info["num_train"], self.info["num_val"], self.info["num_test"],
                       self.info["features"])

    def settings(self):
        return LinkConfig(self.codec, self.x_codec, self.k, self.compress).to_dict()

    def _connect(self, kind=TRAIN):
        """Dial, authenticate, handshake. On reconnect, the HELLO carries the resume state."""
        self.t = self.dial()
        self.t.max_payload = self.max_payload
        try:
            try:
                ftype, _, nonce = self.t.recv()
            except LinkDown as e:
                if self.t.received or hasattr(self.t.sock, "obj"):
                    raise
                raise LinkDown(f"{e} waiting for the host's CHALLENGE (a TLS host needs "
                               f"--tls-fingerprint or --tls-ca)") from None
            self._expect(ftype, nonce, m.T.CHALLENGE)
            resume = None
            if self.halted is not None and self.resumable:
                resume = (self.epoch_no, self.cursor, self.halted.mask, self.start_halted.mask)
            self._send(m.frame(m.T.HELLO, m.pack_hello(
                self.hello, self.codec, self.x_codec, self.k, self.mode,
                m.hello_mac(self.token, nonce) if self.token else None, self.max_payload,
                self.session_token, resume, self.upload_affine(), self.compress)))
            ftype, _, payload = self.t.recv()
            self._expect(ftype, payload, m.T.WELCOME)
            self._welcome(*m.unpack_welcome(payload))
        except BaseException:
            self._count(kind)
            self.t.close()
            raise
        self._count(kind)

    def upload_affine(self):
        """The (lo, step) this device's u8 uploads use, sent in HELLO: device-data mode only."""
        return None

    def _welcome(self, info, tail):
        features, classes = info["features"], info["classes"]
        if features != int(np.prod(self.hello.input_shape)) or classes != self.hello.num_classes:
            raise HostRefused(f"its data has {features} features and {classes} classes, the "
                              f"student {int(np.prod(self.hello.input_shape))} and "
                              f"{self.hello.num_classes}", self.peer)
        self.host_cap = info["max_frame"]
        self.session_token = info["session"]
        if self.token and info.get("auth") is False and not self.said_no_auth:
            self.said_no_auth = True
            self.log("the host does not ask for a token: --token is not needed, and any "
                     "device that reaches the host may train from it")
        self.info = info
        self.xc = self.input_codec(features, tail)
        self.sc = soft_codec(self.codec, classes, self.k)

    def input_codec(self, features, tail):
        """The input codec; u8 takes the host's per-feature lo/step from WELCOME's tail."""
        affine = m.unpack_affine(tail, features, "WELCOME") if self.x_codec == "u8" else None
        return x_codec(self.x_codec, features, affine)

    def _expect(self, ftype, payload, want):
        if ftype == m.T.ERROR:
            code, text = m.unpack_error(payload)
            if code == m.ERR_LINK:
                raise LinkDown(f"host reported link damage: {text}")
            if code == m.ERR_BUSY:
                raise HostBusy(f"host busy: {text}")
            raise HostRefused(text, self.peer)
        if ftype != want:
            raise ProtocolError(f"expected {want.name}, got frame type {ftype}")

    def _reconnect(self, why, kind=TRAIN):
        """A link failure: count it, then connect again (with back-off)."""
        self._drop(kind)
        self._strike(why)
        self._connect_retrying(why, kind)
        self.reconnects += 1

    def _strike(self, why):
        """One more failure without progress; give up past `retries` of them, else wait
        backoff·2^(strikes−1) (at most max_backoff_s)."""
        self.strikes += 1
        if self.strikes > self.retries:
            raise EdgekdError(f"gave up after {self.retries} connection attempts in a row "
                              f"without progress: {why}")
        delay = min(self.backoff_s * 2 ** (self.strikes - 1), self.max_backoff_s)
        self.log(f"link lost ({why}); reconnecting in {delay:.2g} s, attempt "
                 f"{self.strikes}/{self.retries}")
        time.sleep(delay)

    def _connect_retrying(self, why, kind=TRAIN):
        while True:
            try:
                self._connect(kind)
                return
            except (LinkDown, ProtocolError) as e:
                if isinstance(e, ProtocolError) and not e.retryable:
                    raise
                self._drop(kind)
                self._strike(str(e))

    def _progressed(self):
        self.strikes = 0

    def _drop(self, kind=TRAIN):
        if self.t is not None:
            self._count(kind)
            self.t.close()
            self.t = None

    def _count(self, kind=TRAIN):
        """Move the transport's byte counters into ours: training (TRAIN) or test split (EVAL)."""
        t = self.t
        if t is None:
            return
        down, up = t.received, t.sent
        self.bytes_wire += getattr(t, "wire_received", down) + getattr(t, "wire_sent", up)
        if hasattr(t, "reset_counts"):
            t.reset_counts()
        else:
            t.received = t.sent = 0
        if kind == EVAL:
            self.bytes_eval += down + up
        else:
            self.bytes_down += down
            self.bytes_up += up

    def _send(self, data):
        if self.t is None:
            raise LinkDown("connection closed")
        self.t.send(data)

    def _recv(self):
        if self.t is None:
            raise LinkDown("connection closed")
        ftype, flags, payload = self.t.recv()
        if ftype == m.T.ERROR:
            self._expect(ftype, payload, m.T.ERROR)
        return ftype, flags, payload

    # -- training stream ----------------------------------------------------------------------
    def epoch(self, epoch, plan=None):
        """The host's stream (it computes the order; `plan` is the trainer's to check)."""
        self.epoch_no, self.cursor = epoch, 0
        self.start_halted = self.halted.copy()
        fresh = True
        while True:
            try:
                if fresh:
                    if self.t is None:
                        self._reconnect("connection closed")
                    self._send(m.frame(m.T.EPOCH, m.pack_epoch(epoch, self.cursor, self.window)))
                    received, fresh = self.cursor, False
                ftype, flags, payload = self._recv()
                if ftype == m.T.EPOCH_END:
                    e, _n = m.unpack_pair(payload, "EPOCH_END")
                    if e != epoch:
                        raise ProtocolError(f"EPOCH_END for epoch {e} during epoch {epoch}")
                    self._count()
                    return
                if ftype != m.T.BATCH:
                    raise ProtocolError(f"expected BATCH, got frame type {ftype}")
                payload = m.batch_payload(flags, payload, self.max_payload)
                e, cursor, split, ids, y, x, soft = m.unpack_batch(payload, self.xc, self.sc)
                if e != epoch or cursor != received + 1 or split != m.SPLIT_TRAIN or soft is None:
                    raise ProtocolError(f"out-of-order BATCH (epoch {e}, batch {cursor})")
                received = cursor
                self._check_ids(ids, y)
                self._progressed()
            except (LinkDown, ProtocolError) as err:
                if isinstance(err, ProtocolError) and not err.retryable:
                    raise
                self._reconnect(str(err))
                fresh = True
                continue
            self._count()
            yield Batch(ids, x.reshape((len(ids),) + tuple(self.hello.input_shape)), y, soft,
                        m.batch_rows(payload, self.xc, self.sc))

    def row_codec(self):
        return RowCodec(self.xc, self.sc, self.hello.input_shape)

    def _check_ids(self, ids, y):
        if ids.size and ids.max() >= len(self.halted):
            raise ProtocolError("BATCH names a sample id outside the training split")
        if y.size and y.max() >= self.hello.num_classes:
            raise ProtocolError("BATCH carries a label outside the student's classes")

    def report(self, epoch, cursor, halted, woken):
        """ACK (or HALT with ids) after each trained batch; WAKE for drifted samples.
        A send that fails only marks the link down: the next receive reconnects, and the
        resume HELLO carries the halted set, so nothing reported is lost."""
        self.halted.update(halted, woken)
        if cursor:
            self.cursor = cursor
        msgs = []
        if cursor:
            msgs.append(m.frame(m.T.HALT, m.pack_halt(epoch, cursor, halted)) if len(halted)
                        else m.frame(m.T.ACK, m.pack_pair(epoch, cursor)))
        if len(woken):
            msgs.append(m.frame(m.T.WAKE, m.pack_ids(woken)))
        for data in msgs:
            if self.t is None:
                return
            try:
                self._send(data)
            except LinkDown:
                self._drop()
                return
        self._count()

    # -- evaluation data ----------------------------------------------------------------------
    def _retrying(self, attempt, kind=TRAIN):
        """Call `attempt()` until it returns a result, reconnecting after link damage (each
        reconnect has its own bounded retries; an attempt that fails keeps its progress)."""
        while True:
            try:
                if self.t is None:
                    self._reconnect("connection closed", kind)
                result = attempt()
                if result is not None:
                    return result
            except (LinkDown, ProtocolError) as err:
                if isinstance(err, ProtocolError) and not err.retryable:
                    raise
                self._reconnect(str(err), kind)

    def _fetch(self, split):
        """Fetch a split, batch by batch; after a drop, ask only for the batches still missing.
        A host that keeps its test split (WELCOME test_split false) gives an empty one."""
        if split == m.SPLIT_TEST and self.info.get("test_split") is False:
            return Batch(np.zeros(0, np.int64),
                         np.zeros((0,) + tuple(self.hello.input_shape), np.float32),
                         np.zeros(0, np.int64), None)
        kind = EVAL if split == m.SPLIT_TEST else TRAIN
        parts = []
        try:
            self._retrying(lambda: self._fetch_more(split, parts) or None, kind)
        finally:
            self._count(kind)
        shape = (-1,) + tuple(self.hello.input_shape)
        cat = (lambda i, empty: np.concatenate([p[i] for p in parts]) if parts else empty)
        return Batch(cat(0, np.zeros(0, np.int64)), cat(2, np.zeros((0, self.xc.width), np.float32)).reshape(shape),
                     cat(1, np.zeros(0, np.int64)), cat(3, None) if split == m.SPLIT_VAL else None)

    def _fetch_more(self, split, parts):
        """Append the split's batches from len(parts) on to `parts`; True when complete."""
        self._send(m.frame(m.T.FETCH, m.pack_fetch(split, len(parts))))
        while True:
            ftype, flags, payload = self._recv()
            if ftype == m.T.EPOCH_END:
                e, total = m.unpack_pair(payload, "EPOCH_END")
                if e != m.FETCH_EPOCH or total != len(parts):
                    raise ProtocolError("fetch ended early")
                return True
            if ftype != m.T.BATCH:
                raise ProtocolError(f"expected BATCH, got frame type {ftype}")
            payload = m.batch_payload(flags, payload, self.max_payload)
            e, j, s, ids, y, x, soft = m.unpack_batch(payload, self.xc, self.sc)
            if e != m.FETCH_EPOCH or s != split or j != len(parts) + 1 or (soft is None) != (split == m.SPLIT_TEST):
                raise ProtocolError("unexpected BATCH during a fetch")
            parts.append((ids, y, x, soft))
            self._progressed()

    def validation(self):
        return self._fetch(m.SPLIT_VAL)

    def test(self):
        return self._fetch(m.SPLIT_TEST)

    def stop(self, reason):
        """Tell the host why training ended; a host that is already gone does not matter."""
        if self.t is None:
            return
        try:
            self._send(m.frame(m.T.STOP, m.pack_text(reason)))
            self._recv()
        except (LinkDown, ProtocolError):
            pass
        self._count()

    def close(self):
        self._drop()

    def naive_bytes(self, epochs, num_train, batch):
        """What `--no-halting --codec f32 --x-codec f32` costs for `epochs` epochs."""
        return naive_bytes(epochs, num_train, batch, self.info["features"], self.info["classes"])


def naive_bytes(epochs, num_train, batch, features, classes):
    xc, sc = x_codec("f32", features), soft_codec("f32", classes)
    full, rest = divmod(num_train, batch)
    ack = len(m.frame(m.T.ACK, m.pack_pair(0, 0)))
    per_epoch = (len(m.frame(m.T.EPOCH, m.pack_epoch(0, 0, 0)))
                 + len(m.frame(m.T.EPOCH_END, m.pack_pair(0, 0)))
                 + full * (m.batch_nbytes(batch, xc, sc) + ack)
                 + (m.batch_nbytes(rest, xc, sc) + ack if rest else 0))
    return epochs * per_epoch
