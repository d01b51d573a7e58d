"""The serial line, through pyserial's `serial_for_url`: a device path (/dev/ttyUSB0,
/dev/pts/N), `loop://` or `socket://host:port` all work the same. Counts the bytes the line
really carried, COBS and delimiters included."""

import time

import serial

from edgekd.errors import EdgekdError
from edgekd.link.frames import DEFAULT_MAX_PAYLOAD

from .framing import DELIMITER, Deframer, pack


class PortError(EdgekdError):
    """The serial port cannot be opened or used."""


class SerialLink:
    """Whole frames over a serial port. `sent` and `received` count bytes on the wire."""

    def __init__(self, url, baud=115200, max_payload=DEFAULT_MAX_PAYLOAD):
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0, write_timeout=5)
        except (serial.SerialException, ValueError, OSError) as e:
            raise PortError(f"cannot open serial port {url}: {_reason(e)}") from None
        self.url = url
        self.deframer = Deframer(max_payload)
        self.pending = []
        self.sent = self.received = 0
        # A lone delimiter ends whatever partial packet the board holds from before we came.
        self._write(DELIMITER)

    def send(self, ftype, payload=b""):
        self._write(pack(ftype, payload))

    def _write(self, data):
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise PortError(f"serial port {self.url}: write failed: {_reason(e)}") from None
        self.sent += len(data)

    def discard_input(self):
        """Drop whatever arrived unasked (stale replies, NAKs for line noise)."""
        try:
            self.port.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise PortError(f"serial port {self.url}: {_reason(e)}") from None
        self.pending.clear()
        self.deframer.buf.clear()
        self.deframer.overflow = False

    def recv(self, deadline):
        """The next event (type, payload) or FramingError, or None once `deadline`
        (time.monotonic) has passed."""
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self.port.timeout = min(left, 0.05)
                data = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError) as e:
                raise PortError(f"serial port {self.url}: read failed: {_reason(e)}") from None
            self.received += len(data)
            if data:
                self.pending.extend(self.deframer.feed(data))
        return self.pending.pop(0)

    def close(self):
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass


def _reason(e):
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())
