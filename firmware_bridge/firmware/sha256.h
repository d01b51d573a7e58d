/* SHA-256 (FIPS 180-4) for the whole-model check at the end of a DEPLOY. */
#ifndef EKB_SHA256_H
#define EKB_SHA256_H
#include <stddef.h>
#include <stdint.h>
void ekb_sha256(const uint8_t *p, size_t n, uint8_t out[32]);
#endif
