/* The reference firmware on an MPS2 board (QEMU's mps2-an385 / mps2-an386): the UART is the
 * serial line; the main loop polls it and answers requests forever. A reset (power-on or
 * after a fault report) announces itself with one 0x00 byte. */
#include "../../board.h"
#include "cortex_m.h"

volatile uint32_t ekb_systick_wraps;

void SysTick_Handler(void)
{
    ekb_systick_wraps++;
}

int main(void)
{
    ekb_uart_init();
    ekb_board_init();
    /* The boot byte: an empty packet to the protocol; it tells QEMU's launcher that the
     * receiver is on (see firmware_bridge/qemu.py). */
    ekb_uart_put(0);
    for (;;)
        ekb_board_poll();
}
