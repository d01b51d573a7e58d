"""Teacher backends on the host: anything that turns inputs into logits."""

from .native import NativeTeacher, load_teacher

__all__ = ["NativeTeacher", "load_teacher"]
