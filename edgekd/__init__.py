"""edgekd: train small students on small boards by knowledge distillation with early halting."""

__version__ = "0.1.0"
