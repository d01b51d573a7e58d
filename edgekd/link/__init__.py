"""The host<->device link: frames, messages, codecs, transports, the host protocol and the
device-side source the trainer reads."""
