/* The reference firmware on an MPS2 board (QEMU's mps2-an385 / mps2-an386): the UART is the
 * serial line; the main loop polls it and answers requests forever. A reset (power-on or
 * after a fault report) announces itself with one 0x00 byte. */
#include "../../board.h"
#include "cortex_m.h"

static volatile uint32_t systick_wraps;

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* SysTick on the processor clock, free running over 24 bits, wraps counted by its
 * interrupt. Under QEMU's -icount shift=0 the count advances with retired instructions. */
static void systick_start(void)
{
    SYST_RVR = 0xFFFFFFUL;
    SYST_CVR = 0;
    SYST_CSR = 7UL; /* ENABLE, TICKINT, CLKSOURCE = processor clock */
    while (SYST_CVR == 0) /* until the first reload: the count starts from there */
        ;
}

static uint64_t systick_ticks(void)
{
    uint32_t wraps, cvr;
    do {
        wraps = systick_wraps;
        cvr = SYST_CVR;
    } while (wraps != systick_wraps);
    return ((uint64_t)wraps << 24) + (0xFFFFFFUL - cvr) + 1U;
}

/* SysTick runs on the 25 MHz system clock, so under -icount shift=0 (one instruction per
 * nanosecond of virtual time) a tick is 40 instructions. Measured at boot on a loop of known
 * length (2 instructions per pass) rather than assumed; 0 when the count is not exact. */
static uint32_t instructions_per_tick;

static void calibrate(void)
{
    uint32_t n = 100000UL;
    uint64_t t0 = systick_ticks(), dt;
    __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    dt = systick_ticks() - t0;
    instructions_per_tick = dt ? (uint32_t)((200000ULL + dt / 2) / dt) : 0;
}

/* Retired instructions (to within one tick) since boot. */
uint64_t ekb_port_ticks(void)
{
    return systick_ticks() * instructions_per_tick;
}

int main(void)
{
    ekb_uart_init();
    systick_start();
    calibrate();
    ekb_board_init();
    /* The boot byte: an empty packet to the protocol; it tells QEMU's launcher that the
     * receiver is on (see firmware_bridge/qemu.py). */
    ekb_uart_put(0);
    for (;;)
        ekb_board_poll();
}
