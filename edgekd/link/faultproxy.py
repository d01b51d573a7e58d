"""A TCP proxy that damages the link on purpose: it cuts each connection after a random number
of bytes and flips random bits, in both directions. For tests and for trying a deployment's
resilience on loopback before a real radio link does it."""

import random
import socket
import threading


class FaultProxy:
    def __init__(self, upstream, cut_bytes=(20_000, 60_000), flip_prob=0.0, seed=0,
                 host="127.0.0.1"):
        self.upstream = upstream
        self.cut_bytes, self.flip_prob = cut_bytes, flip_prob
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.sock = socket.create_server((host, 0))
        self.address = self.sock.getsockname()[:2]
        self.cuts = self.flips = self.connections = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.connections += 1
                budget = [self.rng.randint(*self.cut_bytes)]
            pair = (down, up)
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst, budget, pair), daemon=True).start()

    def _pump(self, src, dst, budget, pair):
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                with self.lock:
                    if budget[0] <= 0:
                        break
                    data = data[:budget[0]]
                    budget[0] -= len(data)
                    cut = budget[0] <= 0
                    if self.flip_prob and self.rng.random() < self.flip_prob:
                        data = bytearray(data)
                        bit = self.rng.randrange(8 * len(data))
                        data[bit // 8] ^= 1 << (bit % 8)
                        self.flips += 1
                    if cut:
                        self.cuts += 1
                dst.sendall(data)
                if cut:
                    break
        except OSError:
            pass
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stopping.set()
        self.sock.close()
