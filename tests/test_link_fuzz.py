"""Hostile bytes: random and mutated frames into decode_frame / read_frame, every unpack
function, and the host's protocol state machine. Whatever arrives, only ProtocolError (or a
subclass) or EdgekdError may come out; nothing hangs; a frame header announcing a huge
payload is refused before anything is read or allocated."""

import signal
import struct
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linkutil import Stream, StubTeacher

from edgekd.data import load_dataset
from edgekd.source import Hello
from edgekd.errors import EdgekdError
from edgekd.link import messages as m
from edgekd.link.client import LinkSource
from edgekd.link.codecs import affine8_params, soft_codec, x_codec
from edgekd.link.frames import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    OVERHEAD,
    FramingError,
    ProtocolError,
    decode_frame,
    encode_frame,
    read_frame,
)
from edgekd.link.host_protocol import HostProtocol
from edgekd.nn.io import save_model
from edgekd.nn.model import Sequential
from edgekd.teachers import NativeTeacher

ALLOWED = (ProtocolError, EdgekdError)   # ProtocolError is an EdgekdError; both named on purpose
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
U8, U16, U32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
DIGITS = load_dataset("digits")
AFFINE = affine8_params(DIGITS.x_train)
N_TRAIN = len(DIGITS.y_train)
FEATURES = 64


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so nothing under test can swallow it."""


@contextmanager
def no_hang(seconds=10.0):
    def fire(*_):
        raise Hang(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def clean(fn, *args):
    """fn(*args), or None if it raised an allowed error; any other exception fails the test."""
    with no_hang():
        try:
            return fn(*args)
        except ALLOWED:
            return None


@pytest.fixture(scope="module")
def native_teacher(tmp_path_factory):
    spec = {"input_shape": [64], "num_classes": 10,
            "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                       {"type": "dense", "units": 10}]}
    path = tmp_path_factory.mktemp("teacher") / "t.npz"
    save_model(path, Sequential(spec, seed=2))
    return NativeTeacher(path)


# -- valid material to mutate -----------------------------------------------------------------
def valid_payloads():
    xc, sc = x_codec("f32", 4), soft_codec("topk", 10, 3)
    soft = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    return {
        m.T.CHALLENGE: bytes(range(16)),
        m.T.HELLO: m.pack_json({"proto": 1, "seed": 3}, m.pack_bitmap([1, 0, 1]) * 2),
        m.T.WELCOME: m.pack_json({"num_train": 3}, b"\0" * 8),
        m.T.EPOCH: m.pack_epoch(2, 1, 4),
        m.T.BATCH: m.pack_batch(2, 1, 0, [4, 5], [1, 2], xc.encode(np.ones((2, 4), np.float32)),
                                sc.encode(soft)),
        m.T.EPOCH_END: m.pack_pair(2, 9),
        m.T.ACK: m.pack_pair(2, 1),
        m.T.HALT: m.pack_halt(2, 1, [4, 5]),
        m.T.WAKE: m.pack_ids([4]),
        m.T.FETCH: m.pack_fetch(1, 0),
        m.T.QUERY: m.pack_ids([4], b"\0" * 16),
        m.T.SOFT: m.pack_ids([4], soft_codec("f32", 2).encode(np.zeros((1, 2), np.float32))),
        m.T.STOP: m.pack_text("done"),
        m.T.ERROR: m.pack_error(1, "bad crc"),
        m.T.BYE: b"",
    }


VALID = valid_payloads()
VALID_FRAMES = [encode_frame(int(t), p) for t, p in VALID.items()]


def mutate(data, frame):
    """One of: bit flip, truncation, extension, length field change, byte overwrite."""
    frame = bytearray(frame)
    kinds = ["flip", "truncate", "extend", "length", "poke"] if len(frame) >= HEADER.size else ["extend"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "flip":
        bit = data.draw(st.integers(0, 8 * len(frame) - 1), label="bit")
        frame[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del frame[data.draw(st.integers(0, len(frame) - 1), label="keep"):]
    elif kind == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=40), label="extra")
    elif kind == "length":
        new = data.draw(U32.filter(lambda v: v != len(frame) - OVERHEAD), label="length")
        frame[6:10] = struct.pack("<I", new)
    else:
        at = data.draw(st.integers(0, len(frame) - 1), label="at")
        frame[at] = data.draw(U8, label="byte")
    return kind, bytes(frame)


# -- frames -----------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_into_decode_and_read_frame(data):
    clean(decode_frame, data)
    s = Stream(data)
    while clean(read_frame, s.read_exact) is not None:
        pass
    assert max(s.requests) <= DEFAULT_MAX_PAYLOAD


@FUZZ
@given(st.binary(min_size=HEADER.size - 2, max_size=HEADER.size - 2))
def test_random_headers_with_valid_magic(rest):
    header = b"EK\x01" + rest[1:]
    clean(decode_frame, header + bytes(64))
    s = Stream(header + bytes(64))
    clean(read_frame, s.read_exact)
    # a length within the cap may be asked for (the socket reader fills it as bytes arrive);
    # one beyond the cap never is
    assert s.requests[0] == HEADER.size and max(s.requests) <= DEFAULT_MAX_PAYLOAD


@FUZZ
@given(st.data())
def test_any_single_mutation_of_a_valid_frame_is_detected(data):
    frame = data.draw(st.sampled_from(VALID_FRAMES), label="frame")
    kind, bad = mutate(data, frame)
    if kind == "poke" and bad == frame:
        return
    # crc32 catches every 1-bit error; a length change or a cut/extension never matches
    with no_hang(), pytest.raises(FramingError):
        decode_frame(bad)
    s = Stream(bad)
    with no_hang():
        try:
            read_frame(s.read_exact)
        except FramingError:
            pass
        else:   # read_frame reads one frame: only an extension leaves the frame itself intact
            assert kind == "extend" and s.buf.tell() == len(frame)


@FUZZ
@given(st.data())
def test_mutated_stream_of_frames(data):
    frames = data.draw(st.lists(st.sampled_from(VALID_FRAMES), min_size=1, max_size=6))
    stream = bytearray(b"".join(frames))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        _, stream = mutate(data, stream)
    s = Stream(stream)
    for _ in range(len(frames) + 1 + len(stream) // OVERHEAD):
        got = clean(read_frame, s.read_exact)
        if got is None:
            break
        payload = got[2]
        fuzz_unpackers(payload)    # whatever got through must also be safe to unpack
    assert max(s.requests) <= DEFAULT_MAX_PAYLOAD


@pytest.mark.parametrize("length", [DEFAULT_MAX_PAYLOAD + 1, 1 << 31, 0xFFFFFFFF])
def test_huge_length_refused_before_reading_the_payload(length):
    header = HEADER.pack(b"EK", 1, int(m.T.BATCH), 0, 0, length)
    s = Stream(header + bytes(100))
    with pytest.raises(FramingError, match="cap"):
        read_frame(s.read_exact)
    assert s.requests == [HEADER.size]
    with pytest.raises(FramingError, match="cap"):
        decode_frame(header + bytes(4))


@FUZZ
@given(cap=st.integers(0, 4096), length=U32)
def test_reads_never_exceed_the_cap(cap, length):
    header = HEADER.pack(b"EK", 1, 5, 0, 0, length)
    s = Stream(header + bytes(min(length, cap) + 4))
    clean(read_frame, s.read_exact, cap)
    assert s.requests[0] == HEADER.size
    assert all(n <= max(cap, 4) for n in s.requests[1:])
    if length > cap:
        assert s.requests == [HEADER.size]


# -- every unpack function ---------------------------------------------------------------------
CODEC_PAIRS = [(x_codec(xn, FEATURES, AFFINE if xn == "u8" else None), soft_codec(sn, classes, 4))
               for xn in ("f32", "f16", "u8") for sn in ("f32", "f16", "topk") for classes in (10, 300)]


def fuzz_unpackers(payload, n_bits=None):
    clean(m.unpack_epoch, payload)
    clean(m.unpack_pair, payload, "ACK")
    clean(m.unpack_halt, payload)
    clean(m.unpack_ids, payload, "WAKE")
    clean(m.unpack_ids, payload, "QUERY", CODEC_PAIRS[0][0].nbytes)
    clean(m.unpack_ids, payload, "SOFT", CODEC_PAIRS[-1][1].nbytes)
    clean(m.unpack_json, payload, "HELLO")
    clean(m.unpack_fetch, payload)
    clean(m.unpack_bitmap, payload, max(0, len(payload) * 8 - 3) if n_bits is None else n_bits, "HELLO")
    assert isinstance(clean(m.unpack_text, payload), str)
    code, text = clean(m.unpack_error, payload)
    assert code in (m.ERR_LINK, m.ERR_REFUSED, m.ERR_BUSY) and len(text) <= 1000
    for xc, sc in CODEC_PAIRS:
        clean(m.unpack_batch, payload, xc, sc)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 3000))
def test_random_payloads_into_every_unpacker(payload, n_bits):
    fuzz_unpackers(payload, n_bits)


@FUZZ
@given(st.data())
def test_mutated_valid_payloads_into_every_unpacker(data):
    payload = bytearray(data.draw(st.sampled_from(list(VALID.values())), label="payload"))
    if payload:
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(payload) - 1))
            payload[at] = data.draw(U8)
    payload += data.draw(st.binary(max_size=3), label="extra")
    fuzz_unpackers(bytes(payload))


@FUZZ
@given(data=st.data(), pair=st.sampled_from(CODEC_PAIRS))
def test_batch_with_a_consistent_length_and_random_body(data, pair):
    """Right-sized BATCH payloads with random contents reach the codecs' decoders: topk
    indices past the class count, NaN/inf halves and floats, odd split/has_soft bytes."""
    xc, sc = pair
    n = data.draw(st.integers(0, 3), label="n")
    has_soft = data.draw(st.sampled_from([0, 1, 2]), label="has_soft")
    split = data.draw(st.sampled_from([0, 1, 2, 3, 255]), label="split")
    body = 6 * n + xc.nbytes(n) + (sc.nbytes(n) if has_soft else 0)
    head = struct.pack("<IIIBBH", 1, 1, n, split, has_soft, data.draw(U16))
    payload = head + data.draw(st.binary(min_size=body, max_size=body), label="body")
    got = clean(m.unpack_batch, payload, xc, sc)
    if got is not None:
        *_, x, soft = got
        assert np.all(np.isfinite(x)) and (soft is None or np.all(np.isfinite(soft)))


@FUZZ
@given(st.text(max_size=200).map(str.encode) | st.binary(max_size=200), st.binary(max_size=8))
def test_random_json_text(text, tail):
    got = clean(m.unpack_json, struct.pack("<I", len(text)) + text + tail, "HELLO")
    if got is not None:
        assert isinstance(got[0], dict) and got[1] == tail


def test_deeply_nested_json_is_refused():
    text = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ProtocolError):
        m.unpack_json(struct.pack("<I", len(text)) + text, "HELLO")


# -- the host's state machine -------------------------------------------------------------------
def hello_body(mode="host-data", codec="f32", xcodec="f32", k=4, batch=64, seed=3,
               val_fraction=0.2):
    return {"proto": 2, "input_shape": [64], "num_classes": 10, "seed": seed, "batch": batch, "max_frame": 1 << 20,
            "val_fraction": val_fraction, "codec": codec, "x_codec": xcodec, "k": k, "mode": mode,
            "auth": None}


def hello_tail(body):
    if body.get("mode") == "device-data" and body.get("x_codec") == "u8":
        return AFFINE[0].astype("<f4").tobytes() + AFFINE[1].astype("<f4").tobytes()
    return b""


def new_host(teacher=None, token=None):
    return HostProtocol(teacher or StubTeacher(), DIGITS, AFFINE, token)


def feed(proto, frames):
    """Drive the host like the server does: stop at the first error (the session ends there)
    or when it closed. Every answer must itself be a valid frame."""
    with no_hang(20):
        for ftype, flags, payload in frames:
            try:
                out = list(proto.handle(ftype, flags, payload))  # frames come lazily
            except ALLOWED as e:
                decode_frame(proto.error_frame(e))
                return e
            for f in out:
                decode_frame(f)
            if proto.closed:
                return None
    return None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
KEYS = list(hello_body()) + ["resume"]


@st.composite
def hostile_hello(draw):
    body = hello_body(mode=draw(st.sampled_from(["host-data", "device-data"])),
                      codec=draw(st.sampled_from(["f32", "f16", "topk"])),
                      xcodec=draw(st.sampled_from(["f32", "f16", "u8"])))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(JSON)
    if draw(st.booleans()):
        body["resume"] = {"epoch": draw(st.integers(-1, 3) | JSON), "cursor": draw(JSON),
                          "num_train": draw(st.sampled_from([N_TRAIN, N_TRAIN + 1, 0]))}
    half = (N_TRAIN + 7) // 8
    tail = draw(st.sampled_from([b"", hello_tail(body), bytes(2 * half), b"\xff" * (2 * half)])
                | st.binary(max_size=2 * half + 2))
    return body, tail


@FUZZ
@given(st.lists(st.tuples(U8, U8, st.binary(max_size=64)), min_size=1, max_size=6))
def test_host_fed_random_frames_before_hello(frames):
    err = feed(new_host(), frames)
    if frames[0][0] != m.T.HELLO:
        assert isinstance(err, ProtocolError) and "HELLO first" in str(err)


@FUZZ
@given(hostile_hello(), st.lists(st.tuples(U8, U8, st.binary(max_size=40)), max_size=4))
def test_host_fed_a_hostile_hello(hello, after):
    body, tail = hello
    proto = new_host()
    feed(proto, [(int(m.T.HELLO), 0, m.pack_json(body, tail))] + after)


@FUZZ
@given(st.binary(max_size=120), st.binary(max_size=16))
def test_host_fed_hello_with_random_json_bytes(text, tail):
    feed(new_host(), [(int(m.T.HELLO), 0, struct.pack("<I", len(text)) + text + tail)])


@FUZZ
@given(auth=st.none() | st.text(st.characters(max_codepoint=127), max_size=70) | st.integers(),
       good=st.booleans())
def test_host_with_a_token_refuses_wrong_auth(auth, good):
    """(ASCII only: non-ASCII auth strings hit the bug pinned by test_hello_with_non_ascii_auth.)"""
    proto = new_host(token="s3cret")
    body = hello_body()
    body["auth"] = m.hello_mac("s3cret", proto.nonce) if good else auth
    err = feed(proto, [(int(m.T.HELLO), 0, m.pack_json(body))])
    assert (err is None) == (good or auth == m.hello_mac("s3cret", proto.nonce))


@st.composite
def device_frame(draw, mode):
    """A frame a broken or hostile device might send after a good HELLO: mostly well-formed
    messages with odd numbers (so the state machine's checks are reached), some raw garbage."""
    small = st.integers(0, 40) | U32
    kind = draw(st.sampled_from(["EPOCH", "ACK", "HALT", "WAKE", "FETCH", "QUERY", "STOP",
                                 "ERROR", "HELLO", "raw"]))
    ids = st.lists(st.integers(0, N_TRAIN + 2) | U32, max_size=5)
    if kind == "EPOCH":
        return m.T.EPOCH, 0, m.pack_epoch(draw(small), draw(small), draw(U16))
    if kind == "ACK":
        return m.T.ACK, 0, m.pack_pair(draw(small), draw(small))
    if kind == "HALT":
        return m.T.HALT, 0, m.pack_halt(draw(small), draw(small), draw(ids))
    if kind == "WAKE":
        return m.T.WAKE, 0, m.pack_ids(draw(ids))
    if kind == "FETCH":
        return m.T.FETCH, 0, struct.pack("<BI", draw(st.integers(0, 3)), draw(small))
    if kind == "QUERY":
        n = draw(st.integers(0, 3))
        width = draw(st.sampled_from([1, 2, 4]))
        x = draw(st.binary(min_size=n * FEATURES * width, max_size=n * FEATURES * width))
        return m.T.QUERY, 0, m.pack_ids(draw(st.lists(U32, min_size=n, max_size=n)), x)
    if kind == "STOP":
        return m.T.STOP, 0, draw(st.binary(max_size=20))
    if kind == "ERROR":
        return m.T.ERROR, 0, draw(st.binary(max_size=20))
    if kind == "HELLO":
        return m.T.HELLO, 0, m.pack_json(hello_body(mode=mode))
    return draw(U8), draw(U8), draw(st.binary(max_size=60))


@settings(FUZZ, max_examples=50)
@given(data=st.data(), mode=st.sampled_from(["host-data", "device-data"]),
       codec=st.sampled_from(["f32", "f16", "topk"]), xcodec=st.sampled_from(["f32", "f16", "u8"]),
       batch=st.sampled_from([1, 7, 400]), k=st.integers(1, 12))
def test_host_fed_a_valid_hello_then_garbage(native_teacher, data, mode, codec, xcodec, batch, k):
    proto = new_host(native_teacher)
    body = hello_body(mode, codec, xcodec, k, batch, seed=data.draw(st.integers(0, 2**64 - 1)),
                      val_fraction=data.draw(st.sampled_from([0.0, 0.2, 0.999])))
    welcome = proto.handle(m.T.HELLO, 0, m.pack_json(body, hello_tail(body)))
    assert [f[3] for f in welcome] == [m.T.WELCOME]
    frames = data.draw(st.lists(device_frame(mode), min_size=1, max_size=12), label="frames")
    feed(proto, frames)


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_host_resume_hello_then_garbage(data):
    """A resuming HELLO with random bitmaps, then EPOCH at the resume epoch and garbage."""
    proto = new_host()
    half = (N_TRAIN + 7) // 8
    body = hello_body(batch=data.draw(st.sampled_from([1, 50, 2000])))
    epoch = data.draw(st.integers(-1, 3))
    body["resume"] = {"epoch": epoch, "cursor": 0, "num_train": N_TRAIN}
    tail = data.draw(st.binary(min_size=2 * half, max_size=2 * half), label="bitmaps")
    assert feed(proto, [(m.T.HELLO, 0, m.pack_json(body, tail))]) is None
    frames = [(m.T.EPOCH, 0, m.pack_epoch(max(epoch, 0), data.draw(st.integers(0, 30)), 3))]
    frames += data.draw(st.lists(device_frame("host-data"), max_size=8), label="frames")
    feed(proto, frames)


def test_host_session_runs_to_bye_with_acks():
    """The happy path through the same harness: nothing raised, every answer a valid frame."""
    proto = new_host()
    body = hello_body(codec="topk", xcodec="u8", batch=300)
    frames = [(m.T.HELLO, 0, m.pack_json(body)), (m.T.FETCH, 0, m.pack_fetch(1, 0)),
              (m.T.EPOCH, 0, m.pack_epoch(0, 0, 2))]
    frames += [(m.T.ACK, 0, m.pack_pair(0, c)) for c in range(1, 5)]
    frames += [(m.T.STOP, 0, b"done")]
    assert feed(proto, frames) is None and proto.closed and proto.stats["batches"] == 4


# -- bugs found by the fuzzer, pinned ------------------------------------------------------------
def _hello(**fields):
    body = hello_body()
    body.update(fields)
    return m.pack_json(body)


def test_hello_with_an_infinite_number():
    text = m.pack_json(hello_body())[4:].replace(b'"seed":3', b'"seed":1e999')
    with pytest.raises(ALLOWED):
        new_host().handle(m.T.HELLO, 0, struct.pack("<I", len(text)) + text)


def test_hello_with_a_negative_seed():
    with pytest.raises(ALLOWED):
        new_host().handle(m.T.HELLO, 0, _hello(seed=-1))


@pytest.mark.parametrize("epoch", ["x", None, [1]])
def test_hello_with_a_bad_resume_epoch(epoch):
    half = (N_TRAIN + 7) // 8
    body = hello_body()
    body["resume"] = {"epoch": epoch, "cursor": 0, "num_train": N_TRAIN}
    with pytest.raises(ALLOWED):
        new_host().handle(m.T.HELLO, 0, m.pack_json(body, bytes(2 * half)))


def test_json_with_a_huge_integer():
    text = b'{"seed":' + b"1" * 5000 + b"}"
    with pytest.raises(ALLOWED):
        m.unpack_json(struct.pack("<I", len(text)) + text, "HELLO")


def test_hello_with_non_ascii_auth():
    proto = new_host(token="s3cret")
    with pytest.raises(ProtocolError, match="authentication"):
        proto.handle(m.T.HELLO, 0, _hello(auth="\u00e9"))


class ScriptedHost:
    """A transport whose 'host' plays back fixed frames (the device side under test)."""

    def __init__(self, frames):
        self.frames, self.sent, self.received = list(frames), 0, 0

    def send(self, data):
        self.sent += len(data)

    def recv(self):
        data = self.frames.pop(0)
        self.received += len(data)
        return decode_frame(data)

    def close(self):
        pass


def test_device_fed_a_welcome_with_an_infinite_number():
    text = (b'{"num_train":10,"num_val":0,"num_test":0,"features":1e999,"classes":10,'
            b'"codec":"f32","x_codec":"f32","k":4,"mode":"host-data"}')
    frames = [encode_frame(int(m.T.CHALLENGE), bytes(16)),
              encode_frame(int(m.T.WELCOME), struct.pack("<I", len(text)) + text)]
    src = LinkSource(lambda: ScriptedHost(frames), retries=0)
    with pytest.raises(ALLOWED):
        src.open(Hello(0, 8, 0.0, (64,), 10))
