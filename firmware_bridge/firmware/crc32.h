/* CRC-32 as zlib computes it (reflected 0xEDB88320, init and final XOR 0xFFFFFFFF). */
#ifndef EKB_CRC32_H
#define EKB_CRC32_H
#include <stddef.h>
#include <stdint.h>
/* Continue a CRC: pass 0 to start, the previous result to extend. */
uint32_t ekb_crc32(uint32_t crc, const uint8_t *p, size_t n);
#endif
