"""Keeps the weights of the best validation epoch, so a run that ends on a noisy or
drifting epoch can hand back the best student it saw."""

import numpy as np


class BestWeights:
    def __init__(self, enabled):
        self.enabled = enabled
        self.score, self.epoch, self.state = -np.inf, 0, None

    def offer(self, score, epoch, model):
        if not self.enabled or score is None or score <= self.score:
            return
        self.score, self.epoch = score, epoch
        self.state = {k: v.copy() for k, v in model.state().items()}

    def restore(self, model):
        """Load the best weights into `model`; returns the epoch they come from (0: none)."""
        if self.state is None:
            return 0
        model.load_state(self.state, where="best weights")
        return self.epoch

    def weights(self, model):
        """The best weights so far, or the model's own when there is no best yet."""
        return model.state() if self.state is None else self.state

    def arrays(self):
        return {} if self.state is None else {f"best.{k}": v for k, v in self.state.items()}

    def meta(self):
        return {"score": None if self.state is None else float(self.score), "epoch": self.epoch}

    def load(self, meta, arrays):
        if meta["score"] is not None:
            self.score, self.epoch = meta["score"], meta["epoch"]
            self.state = {k[len("best."):]: v for k, v in arrays.items() if k.startswith("best.")}
