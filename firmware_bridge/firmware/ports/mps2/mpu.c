/* The MPU guard (ARMv7-M PMSAv7). Region 0 makes the whole 8 MiB RAM window (the bank and
 * its mirror) no-access, region 1 the 8 MiB below it (the thread stack sits at the start of
 * RAM and grows down: an overflow faults there, however large the frame that overflows);
 * regions 2.. open the board's RAM again in power-of-two pieces (the build checks --ram
 * decomposes into few enough). The default memory map stays on for privileged code
 * (flash, devices). */
#include "cortex_m.h"

#define RASR_ENABLE 1UL
#define RASR_XN (1UL << 28)
#define RASR_AP_RW (3UL << 24)
#define RASR_AP_NONE 0UL
#define RASR_NORMAL (1UL << 17 | 1UL << 16) /* S=0, C=1, B=1: normal memory, write-back */
#define CTRL_ENABLE 1UL
#define CTRL_PRIVDEFENA 4UL
#define SHCSR_MEMFAULTENA (1UL << 16)
#define SHCSR_BUSFAULTENA (1UL << 17)
#define SHCSR_USGFAULTENA (1UL << 18)

static unsigned log2_of(uint32_t pow2)
{
    unsigned k = 0;
    while ((1UL << k) < pow2)
        k++;
    return k;
}

static void region(unsigned n, uint32_t base, uint32_t size, uint32_t attrs)
{
    MPU_RNR = n;
    MPU_RBAR = base;
    MPU_RASR = attrs | ((log2_of(size) - 1UL) << 1) | RASR_ENABLE;
}

void ekb_mpu_guard(void)
{
    uint32_t base = (uint32_t)__ram_start;
    uint32_t left = (uint32_t)__ram_end - base;
    unsigned n = 2, regions = (MPU_TYPE >> 8) & 0xFFUL;
    if (regions < 3)
        return; /* no MPU (or too small): the linker's ASSERT is the only limit */
    MPU_CTRL = 0;
    region(0, base, 8UL << 20, RASR_AP_NONE | RASR_XN);
    region(1, base - (8UL << 20), 8UL << 20, RASR_AP_NONE | RASR_XN);
    while (left && n < regions) {
        uint32_t piece = 1UL << 31;
        while (piece > left)
            piece >>= 1;
        region(n++, base, piece, RASR_AP_RW | RASR_XN | RASR_NORMAL);
        base += piece;
        left -= piece;
    }
    SCB_SHCSR |= SHCSR_MEMFAULTENA | SHCSR_BUSFAULTENA | SHCSR_USGFAULTENA;
    MPU_CTRL = CTRL_ENABLE | CTRL_PRIVDEFENA;
    __asm volatile("dsb\n\tisb" ::: "memory");
}
