#include "cobs.h"
#include "hal.h"

long ekb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t out_max)
{
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t code = in[i++];
        size_t k;
        if (code == 0 || i + (size_t)(code - 1) > n)
            return -1;
        for (k = 1; k < code; k++) {
            if (o >= out_max || in[i] == 0)
                return -1;
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < n) {
            if (o >= out_max)
                return -1;
            out[o++] = 0;
        }
    }
    return (long)o;
}

void ekb_cobs_send(const uint8_t *p, size_t n)
{
    size_t start = 0;
    static const uint8_t zero = 0;
    for (;;) {
        size_t run = 0;
        uint8_t code;
        while (start + run < n && p[start + run] != 0 && run < 254)
            run++;
        code = (uint8_t)(run + 1);
        ekb_hal_write(&code, 1);
        if (run)
            ekb_hal_write(p + start, run);
        start += run;
        if (start >= n)
            break;
        if (run < 254)
            start++; /* the zero this block stands for */
    }
    ekb_hal_write(&zero, 1);
}
