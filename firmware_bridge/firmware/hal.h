/* The hardware abstraction: one function pair for the serial bytes. A port supplies both
 * (see host/main_host.c for POSIX, arduino/edgekd_board.ino for Arduino). */
#ifndef EKB_HAL_H
#define EKB_HAL_H
#include <stddef.h>
#include <stdint.h>

/* Up to `max` received bytes into buf; returns how many (0 if none yet, never blocks long). */
size_t ekb_hal_read(uint8_t *buf, size_t max);
/* Sends n bytes (blocking until they are queued). */
void ekb_hal_write(const uint8_t *buf, size_t n);

#endif
