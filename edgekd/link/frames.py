"""Frames: the one envelope for TCP and serial (docs/protocol.md has the byte layouts).

    magic "EK" | version u8 | type u8 | flags u8 | reserved u8 | length u32 LE | payload | crc32 u32 LE

crc32 (zlib's) covers header and payload. The length is checked against a cap before any
payload is read or allocated, so a hostile peer cannot make us reserve memory.
"""

import struct
import zlib

from ..errors import EdgekdError

MAGIC = b"EK"
VERSION = 1
HEADER = struct.Struct("<2sBBBBI")
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size
DEFAULT_MAX_PAYLOAD = 1 << 20


class ProtocolError(EdgekdError):
    """The peer sent something that is not a valid frame or message. `retryable` errors are
    what a damaged link produces (bad magic, bad length, bad CRC): reconnecting may cure them."""
    retryable = False


class FramingError(ProtocolError):
    """The byte stream is not a sequence of well-formed frames."""
    retryable = True


class CorruptFrame(FramingError):
    """A frame failed its CRC: the bytes were damaged in transit."""


def encode_frame(ftype, payload=b"", flags=0):
    header = HEADER.pack(MAGIC, VERSION, ftype, flags, 0, len(payload))
    return header + payload + CRC.pack(zlib.crc32(payload, zlib.crc32(header)))


def parse_header(header, max_payload=DEFAULT_MAX_PAYLOAD):
    """(type, flags, length) of a 10-byte header, or ProtocolError."""
    magic, version, ftype, flags, _reserved, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise FramingError(f"bad magic {magic!r}: the peer does not speak the edgekd protocol")
    if version != VERSION:
        raise FramingError(f"protocol version {version} is not supported (this side speaks {VERSION})")
    if length > max_payload:
        raise FramingError(f"frame payload of {length} bytes exceeds the cap of {max_payload}")
    return ftype, flags, length


def check_crc(header, payload, crc_bytes):
    (crc,) = CRC.unpack(crc_bytes)
    if zlib.crc32(payload, zlib.crc32(header)) != crc:
        raise CorruptFrame("frame failed its CRC check")


def decode_frame(data, max_payload=DEFAULT_MAX_PAYLOAD):
    """Decode exactly one whole frame from bytes: (type, flags, payload)."""
    if len(data) < OVERHEAD:
        raise FramingError(f"truncated frame: {len(data)} bytes")
    ftype, flags, length = parse_header(data[:HEADER.size], max_payload)
    if len(data) != OVERHEAD + length:
        raise FramingError(f"frame length {len(data)} does not match its header ({OVERHEAD + length})")
    payload = bytes(data[HEADER.size:HEADER.size + length])
    check_crc(data[:HEADER.size], payload, data[HEADER.size + length:])
    return ftype, flags, payload


def read_frame(read_exact, max_payload=DEFAULT_MAX_PAYLOAD):
    """Read one frame through `read_exact(n) -> bytes` (which raises on EOF or timeout)."""
    header = read_exact(HEADER.size)
    ftype, flags, length = parse_header(header, max_payload)
    payload = read_exact(length) if length else b""
    check_crc(header, payload, read_exact(CRC.size))
    return ftype, flags, payload
