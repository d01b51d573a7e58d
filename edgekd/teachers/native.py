"""A teacher saved by edgekd: the same .npz format as a student, run with edgekd's own layers."""

from ..nn.io import load_model


class NativeTeacher:
    def __init__(self, path):
        self.model, self.meta, _ = load_model(path)
        self.path = str(path)
        self.spec = self.model.spec
        self.num_classes = self.model.num_classes
        self.input_shape = self.model.input_shape

    def logits(self, x):
        return self.model.predict(x)
