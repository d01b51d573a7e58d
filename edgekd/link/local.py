"""The in-process link: host and device in one process, charged the bytes real frames cost."""

from ..distill.source import SoftLabelSource
from . import wire
from .host_session import HostSession


class LocalSource(SoftLabelSource):
    def __init__(self, teacher, data):
        self.host = HostSession(teacher, data)
        self.bytes_down = self.bytes_up = self.bytes_eval = 0

    def open(self, hello):
        self.welcome = self.host.open(hello)
        self.batch_size = hello.batch
        return self.welcome

    def epoch(self, epoch):
        self.bytes_up += wire.epoch_bytes()
        order = self.host.order(epoch)
        for start in range(0, len(order), self.batch_size):
            b = self.host.batch(order[start:start + self.batch_size])
            self.bytes_down += wire.batch_bytes(len(b.ids), self.welcome.features, b.soft.shape[1])
            yield b

    def report(self, epoch, cursor, halted, woken):
        self.host.halt(halted)
        self.bytes_up += wire.ack_bytes(len(halted))
        if len(woken):
            self.host.wake(woken)
            self.bytes_up += wire.wake_bytes(len(woken))

    def validation(self):
        b = self.host.validation()
        self.bytes_down += wire.batch_bytes(len(b.ids), self.welcome.features, b.soft.shape[1])
        return b

    def test(self):
        b = self.host.test()
        self.bytes_eval += wire.batch_bytes(len(b.ids), self.welcome.features, 0)
        return b

    def stop(self, reason):
        self.bytes_up += wire.stop_bytes(reason)
