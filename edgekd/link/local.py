"""The in-process link: host and device in one process, the same frames as over TCP."""

from .client import LinkSource
from .codecs import affine8_params
from .host_protocol import HostProtocol
from .transport import MemoryTransport


class LocalSource(LinkSource):
    """A device-side source whose 'host' is a HostProtocol in this process. Every byte is
    really framed, encoded and decoded, so counts, codecs and weights match the TCP path.
    Its refusals are this process's own errors, reported as such."""

    peer = None

    def __init__(self, teacher, data, codec="f32", x_codec="f32", k=4, window=4,
                 compress="none"):
        affine = affine8_params(data.x_train) if x_codec == "u8" else None
        super().__init__(lambda: MemoryTransport(HostProtocol(teacher, data, affine)),
                         codec=codec, x_codec=x_codec, k=k, window=window, compress=compress)
