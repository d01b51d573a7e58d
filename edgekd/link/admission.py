"""Who the host lets in: a small budget for connections that have not authenticated yet,
`max_devices` slots for those that have, resume tokens that let a device's reconnect replace
its own stale session, and per-address exponential back-off after failed authentications.

Thread-safe; the server's session threads call it. Nothing here touches a socket except
`Slot.evict`, which closes the stale session's connection so its thread ends.
"""

import collections
import os
import threading
import time

from ..errors import EdgekdError
from .messages import SESSION_BYTES


class Busy(EdgekdError):
    """The host cannot take this device now (full, or its address is throttled): the device
    gets ERROR code 3 and backs off."""


class Slot:
    def __init__(self, sid, peer, evict):
        self.sid, self.peer, self.evict = sid, peer, evict
        self.token = os.urandom(SESSION_BYTES).hex()


class Admission:
    def __init__(self, max_devices, max_pending=16, backoff_s=1.0, max_backoff_s=300.0,
                 log=None, max_tracked=4096):
        self.max_devices, self.max_pending = max_devices, max_pending
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.log = log or (lambda line: None)
        self.lock = threading.Lock()
        self.pending_conns = collections.OrderedDict()  # ticket -> (address, evict)
        self.next_ticket = self.evicted_pending = 0
        self.slots = {}                           # resume token -> Slot
        self.failures = collections.OrderedDict()  # address -> (count, blocked until)
        self.max_tracked = max_tracked

    # -- before authentication ----------------------------------------------------------------
    def enter_pending(self, addr, evict):
        """A pre-authentication place for a connection from `addr` (a ticket for
        leave_pending). When the budget is spent, the oldest pending connection of the address
        holding the most of them is evicted to make room (`evict()`, called outside the lock,
        closes its socket): a real device authenticates in milliseconds, so whoever waits
        longest is the likeliest hog, and hogs on one address cannot starve other addresses."""
        victim = None
        with self.lock:
            if len(self.pending_conns) >= self.max_pending:
                per = collections.Counter(a for a, _ in self.pending_conns.values())
                busiest = max(per.values())
                oldest = next(k for k, (a, _) in self.pending_conns.items() if per[a] == busiest)
                victim = self.pending_conns.pop(oldest)[1]
                self.evicted_pending += 1
            self.next_ticket += 1
            ticket = self.next_ticket
            self.pending_conns[ticket] = (addr, evict)   # insertion order: oldest first
        if victim is not None:
            victim()
        return ticket

    def leave_pending(self, ticket):
        with self.lock:
            self.pending_conns.pop(ticket, None)

    @property
    def pending(self):
        with self.lock:
            return len(self.pending_conns)

    def throttled(self, addr):
        """Seconds this address must still wait after failed authentications (0: none)."""
        with self.lock:
            entry = self.failures.get(addr)
            return max(0.0, entry[1] - time.monotonic()) if entry else 0.0

    def failed(self, addr):
        """Record a failed authentication: the address waits backoff·2^(failures−1)."""
        with self.lock:
            count = self.failures.pop(addr, (0, 0))[0] + 1
            wait = min(self.backoff_s * 2 ** min(count - 1, 32), self.max_backoff_s)
            self.failures[addr] = (count, time.monotonic() + wait)
            while len(self.failures) > self.max_tracked:
                self.failures.popitem(last=False)
        self.log(f"{addr}: {count} failed authentication{'s' if count > 1 else ''} in a row; "
                 f"throttled for {wait:g} s")

    # -- authenticated ------------------------------------------------------------------------
    def admit(self, addr, sid, peer, replaces, evict):
        """A slot for an authenticated device. A `replaces` token naming a live session hands
        that session's slot to this one and evicts it (the same run, reconnecting)."""
        with self.lock:
            self.failures.pop(addr, None)
            stale = self.slots.pop(replaces, None) if isinstance(replaces, str) else None
            if stale is None and len(self.slots) >= self.max_devices:
                raise Busy(f"the host is serving its maximum of {self.max_devices} devices")
            slot = Slot(sid, peer, evict)
            self.slots[slot.token] = slot
        if stale is not None:
            self.log(f"session {sid} {peer}: replaces its own stale session {stale.sid} {stale.peer}")
            stale.evict()
        return slot

    def release(self, slot):
        with self.lock:
            if self.slots.get(slot.token) is slot:
                del self.slots[slot.token]

    @property
    def active(self):
        with self.lock:
            return len(self.slots)
