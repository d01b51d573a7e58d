/* A fault (HardFault, MemManage, BusFault, UsageFault) is reported as one BOARD_ERROR frame
 * with seq 0xFFFF and code 8, text naming the fault, its address and the PC, so the host
 * prints it instead of timing out; then the board resets itself (the model is lost). */
#include <string.h>

#include "../../cobs.h"
#include "../../crc32.h"
#include "cortex_m.h"

#define E_FAULT 8
#define CFSR_MMARVALID (1UL << 7)
#define CFSR_BFARVALID (1UL << 15)

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_hex(char *p, uint32_t v)
{
    int k;
    *p++ = '0';
    *p++ = 'x';
    for (k = 28; k >= 0; k -= 4)
        *p++ = "0123456789abcdef"[(v >> k) & 0xFUL];
    return p;
}

static const char *fault_name(uint32_t ipsr)
{
    switch (ipsr & 0x1FFUL) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage fault";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    default: return "fault";
    }
}

void ekb_fault_report(const uint32_t *frame, const char *what)
{
    static uint8_t f[160];
    uint32_t ipsr, cfsr = SCB_CFSR, crc, len;
    uint32_t lo = (uint32_t)(uintptr_t)__thread_stack_bottom, hi = (uint32_t)(uintptr_t)__stack_top;
    /* frame: where the hardware stacked the faulting context (thread stack or handler stack) */
    char *p = (char *)f + 13;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    p = put_str(p, "board fault: ");
    p = put_str(p, what ? what : fault_name(ipsr));
    if (cfsr & CFSR_MMARVALID) {
        p = put_str(p, ", data access at ");
        p = put_hex(p, SCB_MMFAR);
    } else if (cfsr & CFSR_BFARVALID) {
        p = put_str(p, ", bus error at ");
        p = put_hex(p, SCB_BFAR);
    }
    p = put_str(p, ", cfsr ");
    p = put_hex(p, cfsr);
    /* the stacked PC, unless the frame itself is where the stack overflowed */
    if (frame && (uint32_t)(uintptr_t)frame >= lo && (uint32_t)(uintptr_t)frame + 32 <= hi) {
        p = put_str(p, ", pc ");
        p = put_hex(p, frame[6]);
    } else if (frame) {
        p = put_str(p, ", stack overflow");
    }
    p = put_str(p, "; the board resets");
    len = (uint32_t)(p - (char *)f) - 10; /* seq + code + text */
    f[0] = 'E'; f[1] = 'K'; f[2] = 1; f[3] = 0x7F; f[4] = 0; f[5] = 0;
    f[6] = (uint8_t)len; f[7] = (uint8_t)(len >> 8); f[8] = 0; f[9] = 0;
    f[10] = 0xFF; f[11] = 0xFF; f[12] = E_FAULT;
    crc = ekb_crc32(0, f, 10 + len);
    f[10 + len] = (uint8_t)crc; f[11 + len] = (uint8_t)(crc >> 8);
    f[12 + len] = (uint8_t)(crc >> 16); f[13 + len] = (uint8_t)(crc >> 24);
    ekb_cobs_send(f, 14 + len);
    __asm volatile("dsb" ::: "memory");
    SCB_AIRCR = 0x05FA0004UL; /* SYSRESETREQ */
    for (;;)
        ;
}

#ifdef EKB_TEST_FAULTS
static volatile uint32_t test_depth_limit = 0xFFFFFFFFUL; /* never reached: RAM ends first */
static uint32_t recurse(uint32_t depth);
static uint32_t (*volatile recurse_again)(uint32_t) = recurse; /* not turned into a loop */

static uint32_t recurse(uint32_t depth)
{
    volatile uint32_t pad[16];
    pad[0] = depth;
    if (depth >= test_depth_limit)
        return pad[0];
    return recurse_again(depth + 1) + pad[0];
}

/* kind 0: read the word just past the board's RAM (the MPU's no-access region); kind 1:
 * recurse until the stack runs into its guard; kind 2: execute from RAM (XN). */
void ekb_port_test_fault(uint8_t kind)
{
    if (kind == 0)
        (void)*(volatile uint32_t *)__ram_end;
    else if (kind == 1)
        (void)recurse(0);
    else
        ((void (*)(void))((uintptr_t)__bss_start | 1UL))();
}
#endif
