/* Bitwise CRC-32: no table, so no 1 KiB of flash; frames are small. */
#include "crc32.h"

uint32_t ekb_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320UL & (0UL - (crc & 1UL)));
    }
    return ~crc & 0xFFFFFFFFUL;
}
