"""Host side of serial-connected boards (microcontrollers without Python).

Layers, lowest first, one module each:
  framing    edgekd frames, COBS-encoded, 0x00-delimited (resynchronizes after garbage)
  transport  pyserial (`serial_for_url`: real ports, pseudo-terminals, loop://, socket://)
  messages   the board protocol's message types and byte layouts (docs/protocol.md, section 11)
  protocol   request/response with sequence numbers, timeouts and bounded retries
  commands   info, deploy, infer, train_last, get_weights, reset: plain functions
plus `emulator` (a board on a pseudo-terminal, TFLM inside), `ekb` (the int8 blob the C
firmware runs), `build` (the C firmware for this host) and `firmware/` (the C sources).
edgekd never imports this package, except its CLI front end `edgekd board`.
"""
