"""Request/response over the serial link: every request carries a sequence number, waits a
bounded time for the reply with that number, and is resent a bounded number of times. A
board that answers the same (seq, request) twice replays its first reply instead of acting
twice, so a resend after a lost reply is always safe."""

import random
import time

from edgekd.errors import EdgekdError
from edgekd.link.frames import FramingError, ProtocolError

from . import messages as m


class BoardTimeout(EdgekdError):
    """The board did not answer within the timeout, after every retry."""


class BoardError(EdgekdError):
    """The board refused a request; `code` is the BOARD_ERROR code."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


class BoardClient:
    """Speaks to one board over a SerialLink. `log(msg)` hears about resends."""

    def __init__(self, link, timeout=2.0, retries=4, log=None):
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.log = log or (lambda msg: None)
        self.seq = random.SystemRandom().randrange(0, m.NO_SEQ)
        self.resends = 0

    def _next_seq(self):
        self.seq = (self.seq + 1) % m.NO_SEQ  # 0xFFFF is reserved for NAKs
        return self.seq

    def request(self, rtype, body=b"", timeout=None):
        """Send one request, return the reply's body (after the seq). Raises BoardError for a
        refusal, BoardTimeout when every try went unanswered."""
        seq = self._next_seq()
        name = m.NAMES.get(rtype, hex(rtype))
        wait = self.timeout if timeout is None else timeout
        payload = m.with_seq(seq, body)
        why = "no answer"
        self.link.discard_input()
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
                self.log(f"resending {name} (seq {seq}, try {attempt + 1}): {why}")
            self.link.send(rtype, payload)
            deadline = time.monotonic() + wait
            while True:
                event = self.link.recv(deadline)
                if event is None:
                    why = f"no answer within {wait:g} s"
                    break
                if isinstance(event, FramingError):
                    why = f"damaged reply ({event})"
                    break
                ftype, reply = event
                try:
                    rseq, rbody = m.split_seq(reply)
                except ProtocolError:
                    continue
                if ftype == m.BOARD_ERROR and rseq in (seq, m.NO_SEQ):
                    code, text = _error(rbody)
                    if code == m.E_DAMAGED:
                        why = f"the board got a damaged frame ({text})"
                        break
                    raise BoardError(code, f"board refused {name}: {text}")
                if rseq == seq and ftype == rtype | m.REPLY:
                    return rbody
                # a reply to an earlier try, or to an earlier request: not ours, keep waiting
        raise BoardTimeout(f"board on {self.link.url} did not answer {name} after "
                           f"{self.retries + 1} tries ({why})")


def _error(body):
    if not body:
        return m.E_REFUSED, "(no reason given)"
    text = " ".join(body[1:].decode("utf-8", "replace").split())[:1000]
    return body[0], text or "(no reason given)"
