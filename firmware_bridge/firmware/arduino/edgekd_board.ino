// edgekd reference firmware on an Arduino-compatible board (ESP32-S3, STM32, nRF52...).
//
// Copy the C sources of firmware_bridge/firmware/ (board.c, cobs.c, crc32.c, sha256.c,
// ekb_model.c and their headers, ekb_config.h, hal.h) next to this sketch, in a folder
// named edgekd_board, and build it. Buffer sizes are set in ekb_config.h (or with -D).
// The HAL is the one function pair below: it is the only board-specific code.
// Use a USB-serial or UART that nothing else writes to: the line carries binary frames.

extern "C" {
#include "board.h"
#include "hal.h"
}

extern "C" size_t ekb_hal_read(uint8_t *buf, size_t max) {
  size_t n = 0;
  while (n < max && Serial.available() > 0) buf[n++] = (uint8_t)Serial.read();
  return n;
}

extern "C" void ekb_hal_write(const uint8_t *buf, size_t n) {
  Serial.write(buf, n);
}

void setup() {
  Serial.begin(115200);
  ekb_board_init();
}

void loop() {
  ekb_board_poll();
}
