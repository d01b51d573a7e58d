/* Consistent Overhead Byte Stuffing, as the Python `cobs` package encodes it: a frame
 * on the wire is cobs(frame) followed by one 0x00. */
#ifndef EKB_COBS_H
#define EKB_COBS_H
#include <stddef.h>
#include <stdint.h>

/* Decode n bytes (no delimiter) into out (may alias in); returns the decoded length,
 * or -1 if the packet is malformed or would exceed out_max. */
long ekb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t out_max);
/* Encode and send through ekb_hal_write, then the 0x00 delimiter. */
void ekb_cobs_send(const uint8_t *p, size_t n);
#endif
