"""Messages: the payload of each frame type, packed little-endian (docs/protocol.md has the
byte layouts). Every unpack checks lengths exactly and raises ProtocolError, never anything
else, whatever the bytes."""

import hashlib
import hmac
import json
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .codecs import SOFT_CODECS, X_CODECS
from .frames import OVERHEAD, ProtocolError, encode_frame


class T(IntEnum):
    CHALLENGE = 1   # host -> device  nonce
    HELLO = 2       # device -> host  JSON (+ resume bitmaps)
    WELCOME = 3     # host -> device  JSON (+ u8 codec parameters)
    EPOCH = 4       # device -> host  start or resume an epoch at a cursor
    BATCH = 5       # host -> device  ids, labels, x, soft labels
    EPOCH_END = 6   # host -> device  the epoch (or fetch) has no more batches
    ACK = 7         # device -> host  trained through cursor
    HALT = 8        # device -> host  ACK + newly settled ids
    WAKE = 9        # device -> host  un-settle ids
    FETCH = 10      # device -> host  stream the validation or test split
    QUERY = 11      # device -> host  device-data mode: inputs to label
    SOFT = 12       # host -> device  device-data mode: soft labels
    STOP = 13       # device -> host  training is over, with the reason
    ERROR = 14      # either way      a one-line error; the sender closes
    BYE = 15        # host -> device  STOP acknowledged


PROTO = 2                         # HELLO's "proto": the message set's version
SESSION_BYTES = 16                # WELCOME's "session": the resume token, hex
MIN_FRAME_CAP = 4096              # the smallest max_frame a peer may announce


def hello_mac(token, nonce):
    """HELLO's auth field: HMAC-SHA256(token, "edgekd-hello" + the host's nonce), hex."""
    return hmac.new(token.encode(), b"edgekd-hello" + nonce, hashlib.sha256).hexdigest()


SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = 0, 1, 2
FETCH_EPOCH = 0xFFFFFFFF          # EPOCH_END.epoch that ends a FETCH
NONCE_BYTES = 16

_EPOCH = struct.Struct("<IIH")
_BATCH = struct.Struct("<IIIBBH")
_PAIR = struct.Struct("<II")
_HALT = struct.Struct("<III")
_COUNT = struct.Struct("<I")


def frame(ftype, payload=b"", flags=0):
    return encode_frame(int(ftype), payload, flags)


def _unpack(st, payload, what, exact=True):
    if len(payload) < st.size or (exact and len(payload) != st.size):
        raise ProtocolError(f"{what}: payload of {len(payload)} bytes, expected {st.size}")
    return st.unpack_from(payload)


def _ids(buf, count, offset, what):
    if len(buf) < offset + 4 * count:
        raise ProtocolError(f"{what}: truncated id list")
    return np.frombuffer(buf, "<u4", count, offset).astype(np.int64)


# -- handshake -------------------------------------------------------------------------------
def pack_json(obj, tail=b""):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _COUNT.pack(len(body)) + body + tail


def unpack_json(payload, what):
    (n,) = _unpack(_COUNT, payload, what, exact=False)
    if len(payload) < 4 + n:
        raise ProtocolError(f"{what}: truncated JSON")
    try:
        obj = json.loads(payload[4:4 + n].decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: also huge ints
        raise ProtocolError(f"{what}: malformed JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: expected a JSON object")
    return obj, payload[4 + n:]


def json_int(obj, key, lo, hi, what, default=None):
    """An integer field of a handshake object, in [lo, hi], or ProtocolError."""
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be an integer in {lo}..{hi}, got {str(v)[:40]}")
    return v


def json_str(obj, key, allowed, what, default=None):
    v = obj.get(key, default)
    if v not in allowed:
        raise ProtocolError(f"{what}: {key} must be one of {', '.join(allowed)}, got {str(v)[:40]}")
    return v


def pack_bitmap(mask):
    return np.packbits(np.asarray(mask, bool), bitorder="little").tobytes()


def unpack_bitmap(buf, n, what):
    need = (n + 7) // 8
    if len(buf) != need:
        raise ProtocolError(f"{what}: bitmap of {len(buf)} bytes, expected {need}")
    return np.unpackbits(np.frombuffer(buf, np.uint8), count=n, bitorder="little").astype(bool)


# -- HELLO / WELCOME: JSON, then a binary tail ---------------------------------------------
MODES = ("host-data", "device-data")


def pack_hello(hello, codec, x_codec, k, mode, auth, max_frame, replaces, resume=None,
               affine=None, compress="none"):
    """HELLO for `hello` (a source.Hello). `resume` = (epoch, cursor, halted mask, mask at the
    epoch's start) adds the resume state and its two bitmaps; `affine` = (lo, step) is the
    device's u8 upload scale (device-data mode)."""
    body = {"proto": PROTO, "input_shape": list(hello.input_shape),
            "num_classes": hello.num_classes, "seed": hello.seed, "batch": hello.batch,
            "val_fraction": hello.val_fraction, "codec": codec, "x_codec": x_codec, "k": k,
            "mode": mode, "auth": auth, "max_frame": max_frame, "replaces": replaces}
    if compress != "none":     # absent means none: older hosts read the HELLO unchanged
        body["compress"] = compress
    tail = b"" if affine is None else pack_affine(*affine)
    if resume is not None:
        epoch, cursor, halted, start = resume
        body["resume"] = {"epoch": epoch, "cursor": cursor, "num_train": len(halted)}
        tail = pack_bitmap(halted) + pack_bitmap(start)
    return pack_json(body, tail)


@dataclass(frozen=True)
class HelloRequest:
    """A HELLO as the host reads it, every field checked (`body` is the JSON as sent)."""
    body: dict
    input_shape: tuple
    num_classes: int
    seed: int
    batch: int
    val_fraction: float
    codec: str
    x_codec: str
    k: int
    mode: str
    max_frame: int
    replaces: str | None
    resume: dict | None     # read with unpack_resume once the host knows its split's size
    tail: bytes
    compress: str = "none"  # how the device wants BATCH payloads: none or zlib


def unpack_hello(payload, authenticate):
    """A HelloRequest. `authenticate(auth)` is called right after the protocol check and
    raises if the device did not prove it knows the token."""
    h, tail = unpack_json(payload, "HELLO")
    if h.get("proto") != PROTO:
        raise ProtocolError(f"device speaks protocol {h.get('proto')!r}, this host speaks {PROTO}")
    authenticate(h.get("auth"))
    dims = h.get("input_shape")
    if not isinstance(dims, list) or not 1 <= len(dims) <= 3:
        raise ProtocolError("HELLO: input_shape must be a list of 1-3 integers")
    shape = tuple(json_int({"d": d}, "d", 1, 1 << 20, "HELLO input_shape") for d in dims)
    classes = json_int(h, "num_classes", 2, 65535, "HELLO")
    seed = json_int(h, "seed", 0, 2 ** 64 - 1, "HELLO")
    batch = json_int(h, "batch", 1, 65535, "HELLO")
    k = json_int(h, "k", 1, 255, "HELLO", default=4)
    codec = json_str(h, "codec", SOFT_CODECS, "HELLO")
    xcodec = json_str(h, "x_codec", X_CODECS, "HELLO")
    mode = json_str(h, "mode", MODES, "HELLO", default="host-data")
    val_fraction = h.get("val_fraction")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 <= val_fraction < 1:
        raise ProtocolError("HELLO: val_fraction must be a number in [0, 1)")
    max_frame = json_int(h, "max_frame", MIN_FRAME_CAP, 2 ** 32 - 1, "HELLO")
    replaces = h.get("replaces")
    if replaces is not None and not (isinstance(replaces, str) and len(replaces) == 2 * SESSION_BYTES):
        raise ProtocolError("HELLO: replaces must be a session token from WELCOME, or null")
    compress = json_str(h, "compress", COMPRESSIONS, "HELLO", default="none")
    return HelloRequest(h, shape, classes, seed, batch, val_fraction, codec, xcodec, k, mode,
                        max_frame, replaces, h.get("resume"), tail, compress)


def unpack_resume(resume, tail, n):
    """(halted mask, epoch, mask at that epoch's start) of a resuming HELLO over n samples."""
    if not isinstance(resume, dict) or resume.get("num_train") != n:
        raise ProtocolError("resume state does not match this host's data set")
    half = (n + 7) // 8
    if len(tail) != 2 * half:
        raise ProtocolError("resume bitmaps have the wrong length")
    halted = unpack_bitmap(tail[:half], n, "HELLO")
    epoch = json_int(resume, "epoch", -1, 2 ** 32 - 1, "HELLO resume", default=-1)
    return halted, epoch, unpack_bitmap(tail[half:], n, "HELLO")


def pack_welcome(info, affine=None):
    """WELCOME: the host's JSON answer, then (u8 inputs) the per-feature lo/step."""
    return pack_json(info, b"" if affine is None else pack_affine(*affine))


def unpack_welcome(payload):
    """(info, tail) with every field the device relies on checked."""
    info, tail = unpack_json(payload, "WELCOME")
    json_int(info, "features", 1, 1 << 24, "WELCOME")
    json_int(info, "classes", 2, 65535, "WELCOME")
    for key in ("num_train", "num_val", "num_test"):
        json_int(info, key, 0, 2 ** 32 - 1, "WELCOME")
    session = info.get("session")
    if not (isinstance(session, str) and len(session) == 2 * SESSION_BYTES):
        raise ProtocolError("WELCOME lacks a session token")
    json_int(info, "max_frame", MIN_FRAME_CAP, 2 ** 32 - 1, "WELCOME")
    return info, tail


def pack_affine(lo, step):
    """The u8 codec's scale: f32 lo[features], then f32 step[features]."""
    return np.asarray(lo, "<f4").tobytes() + np.asarray(step, "<f4").tobytes()


def unpack_affine(tail, features, what):
    """(lo, step) from a handshake tail; finite, and every step > 0."""
    if len(tail) != 8 * features:
        raise ProtocolError(f"{what} lacks the u8 input parameters (per-feature lo/step)")
    lo = np.frombuffer(tail, "<f4", features)
    step = np.frombuffer(tail, "<f4", features, 4 * features)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(step)) and np.all(step > 0)):
        raise ProtocolError(f"{what}: bad u8 parameters")
    return lo, step


# -- training --------------------------------------------------------------------------------
def pack_epoch(epoch, cursor, window):
    return _EPOCH.pack(epoch, cursor, window)


def unpack_epoch(payload):
    return _unpack(_EPOCH, payload, "EPOCH")


def pack_batch(epoch, cursor, split, ids, y, x_bytes, soft_bytes):
    n = len(ids)
    head = _BATCH.pack(epoch, cursor, n, split, soft_bytes is not None, 0)
    return (head + np.asarray(ids, "<u4").tobytes() + np.asarray(y, "<u2").tobytes()
            + x_bytes + (soft_bytes or b""))


def unpack_batch(payload, xc, sc):
    """(epoch, cursor, split, ids, y, x [n, features], soft [n, classes] or None)."""
    epoch, cursor, n, split, has_soft, _ = _unpack(_BATCH, payload, "BATCH", exact=False)
    o = _BATCH.size
    need = o + 6 * n + xc.nbytes(n) + (sc.nbytes(n) if has_soft else 0)
    if len(payload) != need or split > SPLIT_TEST or has_soft > 1:
        raise ProtocolError(f"BATCH: {len(payload)} bytes for {n} samples, expected {need}")
    ids = _ids(payload, n, o, "BATCH")
    o += 4 * n
    y = np.frombuffer(payload, "<u2", n, o).astype(np.int64)
    o += 2 * n
    x = _finite(xc.decode(payload[o:o + xc.nbytes(n)], n), "BATCH inputs")
    o += xc.nbytes(n)
    soft = _finite(sc.decode(payload[o:], n), "BATCH soft labels") if has_soft else None
    return epoch, cursor, split, ids, y, x, soft


COMPRESSIONS = ("none", "zlib")
FLAG_ZLIB = 0x01        # frame flags of a BATCH: the payload is zlib-compressed
ZLIB_LEVEL = 6


def batch_frame(compress, epoch, cursor, split, ids, y, x_bytes, soft_bytes):
    """A BATCH frame, its payload deflated when the device asked for zlib in HELLO."""
    payload = pack_batch(epoch, cursor, split, ids, y, x_bytes, soft_bytes)
    if compress == "zlib":
        return frame(T.BATCH, zlib.compress(payload, ZLIB_LEVEL), FLAG_ZLIB)
    return frame(T.BATCH, payload)


def batch_payload(flags, payload, cap):
    """A received BATCH's payload: inflated when FLAG_ZLIB is set, never past `cap` bytes (a
    small frame cannot inflate into a large allocation)."""
    if not flags & FLAG_ZLIB:
        return payload
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, cap)
    except zlib.error as e:
        raise ProtocolError(f"BATCH: bad zlib payload ({e})") from None
    if inflater.unconsumed_tail:
        raise ProtocolError(f"BATCH: compressed payload inflates past the frame cap of {cap:,}")
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError("BATCH: truncated or trailing zlib data")
    return out


def batch_rows(payload, xc, sc):
    """A checked BATCH's samples as the link carried them: uint8 [n, x bytes + soft bytes],
    inputs then soft label per row, still encoded (what a device keeps to replay later)."""
    n = _BATCH.unpack_from(payload)[2]
    o = _BATCH.size + 6 * n
    xw, sw = xc.nbytes(1), sc.nbytes(1)
    x = np.frombuffer(payload, np.uint8, n * xw, o).reshape(n, xw)
    soft = np.frombuffer(payload, np.uint8, n * sw, o + n * xw).reshape(n, sw)
    return np.concatenate([x, soft], axis=1)


def batch_nbytes(n, xc, sc):
    """Bytes on the link for one BATCH frame of n samples (frame overhead included)."""
    return OVERHEAD + _BATCH.size + 6 * n + xc.nbytes(n) + (sc.nbytes(n) if sc else 0)


_FETCH = struct.Struct("<BI")


def pack_fetch(split, start):
    return _FETCH.pack(split, start)


def unpack_fetch(payload):
    split, start = _unpack(_FETCH, payload, "FETCH")
    if split not in (SPLIT_VAL, SPLIT_TEST):
        raise ProtocolError(f"FETCH names split {split} (1 validation, 2 test)")
    return split, start


def pack_pair(a, b):
    return _PAIR.pack(a, b)


def unpack_pair(payload, what):
    return _unpack(_PAIR, payload, what)


def pack_halt(epoch, cursor, ids):
    return _HALT.pack(epoch, cursor, len(ids)) + np.asarray(ids, "<u4").tobytes()


def unpack_halt(payload):
    epoch, cursor, n = _unpack(_HALT, payload, "HALT", exact=False)
    if len(payload) != _HALT.size + 4 * n:
        raise ProtocolError(f"HALT: {len(payload)} bytes for {n} ids")
    return epoch, cursor, _ids(payload, n, _HALT.size, "HALT")


def pack_ids(ids, tail=b""):
    return _COUNT.pack(len(ids)) + np.asarray(ids, "<u4").tobytes() + tail


def unpack_ids(payload, what, tail_nbytes=None):
    """(ids, rest). With tail_nbytes(n), the rest must be exactly that long."""
    (n,) = _unpack(_COUNT, payload, what, exact=False)
    ids = _ids(payload, n, 4, what)
    rest = payload[4 + 4 * n:]
    want = 0 if tail_nbytes is None else tail_nbytes(n)
    if len(rest) != want:
        raise ProtocolError(f"{what}: {len(payload)} bytes for {n} ids")
    return ids, rest


ERR_LINK, ERR_REFUSED, ERR_BUSY = 1, 2, 3


def pack_error(code, text):
    return bytes([code]) + pack_text(text)


def unpack_error(payload):
    """(code, text); a payload without a known code reads as a refusal."""
    if payload[:1] in (bytes([ERR_LINK]), bytes([ERR_REFUSED]), bytes([ERR_BUSY])):
        return payload[0], unpack_text(payload[1:])
    return ERR_REFUSED, unpack_text(payload)


def pack_text(text):
    return text.encode("utf-8", "replace")[:4096]


def unpack_text(payload):
    """Network text made safe for a terminal: whitespace runs become one space, control and
    format characters (ANSI escapes, bidi overrides) are shown escaped, at most 1000 chars."""
    return escape_text(payload.decode("utf-8", "replace"))[:1000]


_UNSAFE = ("Cc", "Cf", "Cs", "Co", "Cn")


def escape_text(text):
    """One line with every control/format character written as \\xNN or \\uNNNN."""
    text = " ".join(str(text).split())
    if all(" " <= c < "\x7f" for c in text):
        return text
    return "".join(c if unicodedata.category(c) not in _UNSAFE
                   else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)


def batch_payload_bytes(n, xc, sc):
    """Payload bytes of a BATCH of n samples (sc None: no soft labels)."""
    return _BATCH.size + 6 * n + xc.nbytes(n) + (sc.nbytes(n) if sc else 0)


def ids_payload_bytes(n, codec):
    """Payload bytes of a QUERY (x codec) or SOFT (soft codec) of n samples."""
    return 4 + 4 * n + codec.nbytes(n)


def _finite(a, what):
    if not np.all(np.isfinite(a)):
        raise ProtocolError(f"{what} hold NaN or inf")
    return a
