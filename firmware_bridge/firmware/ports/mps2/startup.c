/* Reset and the vector table: the initial stack pointer, Reset_Handler, the fault vectors
 * (all into the fault reporter) and SysTick. Reset moves thread mode onto its own stack
 * (PSP; handlers keep the MSP), copies .data from flash, zeroes .bss, turns the FPU on when
 * the build uses it, sets the MPU guard and runs main(). */
#include "cortex_m.h"

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) static const vector vectors[16] = {
    (vector)(uintptr_t)__stack_top, /* initial MSP */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler, /* no external interrupt is enabled: the table ends here */
};

static void reset_c(void);

/* Naked: nothing may be on the stack while thread mode switches from MSP to PSP. */
__attribute__((naked)) void Reset_Handler(void)
{
    __asm volatile(
        "ldr r0, =__thread_stack_top\n\t"
        "msr psp, r0\n\t"
        "movs r0, #2\n\t" /* CONTROL.SPSEL: thread mode uses PSP */
        "msr control, r0\n\t"
        "isb\n\t"
        "b reset_c\n\t");
}

__attribute__((used)) static void reset_c(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFUL << 20; /* CP10 and CP11: full access */
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    SCB_VTOR = (uint32_t)(uintptr_t)vectors;
    ekb_mpu_guard();
    main();
    for (;;)
        ;
}

/* Takes the stacked exception frame (MSP or PSP, from EXC_RETURN bit 2), moves SP back to
 * the top of the stack (a stack overflow leaves it in the guard) and reports. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "ldr r1, =__stack_top\n\t"
        "mov sp, r1\n\t"
        "movs r1, #0\n\t"
        "b ekb_fault_report\n\t");
}

void Default_Handler(void)
{
    ekb_fault_report(0, "unexpected interrupt");
}
