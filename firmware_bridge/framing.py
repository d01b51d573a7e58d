"""Serial framing: each edgekd frame (edgekd.link.frames) is COBS-encoded and followed by one
0x00 byte. COBS leaves no 0x00 inside an encoded frame, so a reader that lost its place
(line noise, a dropped byte, a reset peer) is back in step at the next 0x00."""

from cobs import cobs

from edgekd.link.frames import (
    DEFAULT_MAX_PAYLOAD,
    MAGIC,
    OVERHEAD,
    VERSION,
    FramingError,
    decode_frame,
    encode_frame,
)

DELIMITER = b"\x00"


def encoded_limit(frame_bytes):
    """Longest COBS encoding of a frame of `frame_bytes` bytes (one code byte per 254)."""
    return frame_bytes + frame_bytes // 254 + 1


def pack(ftype, payload=b""):
    """One frame as it goes on the wire."""
    return cobs.encode(encode_frame(ftype, payload)) + DELIMITER


def looks_like_frame(raw):
    """Does a packet that failed to decode still start like an edgekd frame? A board NAKs
    those (a frame damaged in transit) and stays silent on line noise, so that garbage does
    not flood the host with NAKs."""
    try:
        return raw is not None and cobs.decode(raw)[:3] == MAGIC + bytes([VERSION])
    except cobs.DecodeError:
        return False


class Deframer:
    """Turns a byte stream into frames. `feed` returns a list of events, each either
    (type, payload) for a good frame or a FramingError for a damaged one. A packet longer
    than any frame allowed by `max_payload` is discarded up to its delimiter, so garbage
    cannot make the buffer grow."""

    def __init__(self, max_payload=DEFAULT_MAX_PAYLOAD):
        self.max_payload = max_payload
        self.limit = encoded_limit(OVERHEAD + max_payload)
        self.buf = bytearray()
        self.overflow = False

    def feed(self, data):
        return [e for e in map(self.decode, self.packets(data)) if e is not None]

    def packets(self, data):
        """The complete packets in data (bytes between delimiters, undecoded); an
        overlong packet comes back as None."""
        out = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._append(data[start:])
                return out
            self._append(data[start:end])
            out.append(None if self.overflow else bytes(self.buf))
            self.buf.clear()
            self.overflow = False
            start = end + 1

    def _append(self, part):
        if self.overflow:
            return
        if len(self.buf) + len(part) > self.limit:
            self.overflow = True
            self.buf.clear()
        else:
            self.buf += part

    def decode(self, raw):
        """A packet -> (type, payload), FramingError, or None for an empty packet."""
        if raw is None:
            return FramingError(f"a packet longer than {self.limit} bytes was discarded")
        if not raw:  # an empty packet (two delimiters in a row) is how a sender flushes
            return None
        try:
            ftype, _flags, payload = decode_frame(cobs.decode(raw), self.max_payload)
        except cobs.DecodeError as e:
            return FramingError(f"bad COBS packet: {e}")
        except FramingError as e:
            return e
        return ftype, payload
