/* The HAL on the MPS2's CMSDK APB UART0, polled (no interrupts): QEMU puts it on a
 * pseudo-terminal with `-serial pty`. Registers: DATA +0, STATE +4 (bit 0 TX full, bit 1
 * RX full), CTRL +8 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10. */
#include "../../hal.h"
#include "cortex_m.h"

#define UART0_BASE 0x40004000UL
#define UART_DATA    REG32(UART0_BASE + 0x00)
#define UART_STATE   REG32(UART0_BASE + 0x04)
#define UART_CTRL    REG32(UART0_BASE + 0x08)
#define UART_BAUDDIV REG32(UART0_BASE + 0x10)
#define STATE_TX_FULL 1UL
#define STATE_RX_FULL 2UL

#ifndef EKB_UART_BAUDDIV  /* 25 MHz / 115200 */
#define EKB_UART_BAUDDIV 217
#endif
/* How many empty polls of the RX register end a read: long enough that the bytes of one
 * packet arrive in a few reads, short enough that the board stays responsive. */
#define IDLE_POLLS 64

void ekb_uart_init(void)
{
    UART_BAUDDIV = EKB_UART_BAUDDIV;
    UART_CTRL = 3UL; /* TX and RX enabled, no interrupts */
    /* Reading DATA tells QEMU's UART model that the receiver can take a byte; enabling RX
     * alone does not, and input that arrived before it would wait for good. */
    (void)UART_DATA;
}

void ekb_uart_put(uint8_t b)
{
    while (UART_STATE & STATE_TX_FULL)
        ;
    UART_DATA = b;
}

size_t ekb_hal_read(uint8_t *buf, size_t max)
{
    size_t n = 0;
    unsigned idle = 0;
    while (n < max && idle < IDLE_POLLS) {
        if (UART_STATE & STATE_RX_FULL) {
            buf[n++] = (uint8_t)UART_DATA;
            idle = 0;
        } else {
            idle++;
        }
    }
    return n;
}

void ekb_hal_write(const uint8_t *buf, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        ekb_uart_put(buf[i]);
}
