/* The few Cortex-M system registers the port touches (ARMv7-M Architecture Reference
 * Manual, B3), and what the port's modules offer each other. */
#ifndef EKB_CORTEX_M_H
#define EKB_CORTEX_M_H
#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

#define SCB_ICSR   REG32(0xE000ED04UL)
#define SCB_VTOR   REG32(0xE000ED08UL)
#define SCB_AIRCR  REG32(0xE000ED0CUL)
#define SCB_SHCSR  REG32(0xE000ED24UL)
#define SCB_CFSR   REG32(0xE000ED28UL)
#define SCB_HFSR   REG32(0xE000ED2CUL)
#define SCB_MMFAR  REG32(0xE000ED34UL)
#define SCB_BFAR   REG32(0xE000ED38UL)
#define SCB_CPACR  REG32(0xE000ED88UL)

#define MPU_TYPE   REG32(0xE000ED90UL)
#define MPU_CTRL   REG32(0xE000ED94UL)
#define MPU_RNR    REG32(0xE000ED98UL)
#define MPU_RBAR   REG32(0xE000ED9CUL)
#define MPU_RASR   REG32(0xE000EDA0UL)

#define SYST_CSR   REG32(0xE000E010UL)
#define SYST_RVR   REG32(0xE000E014UL)
#define SYST_CVR   REG32(0xE000E018UL)

/* Symbols of the linker script (mps2.ld). */
extern uint32_t __ram_start[], __ram_end[], __thread_stack_bottom[], __thread_stack_top[], __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];

/* mpu.c: the address space just below the board's RAM and everything of the RAM bank past
 * it become no-access, so running off either end faults instead of corrupting memory. */
void ekb_mpu_guard(void);
/* uart_cmsdk.c */
void ekb_uart_init(void);
void ekb_uart_put(uint8_t b);
/* fault.c: reports a fault on the UART, then resets the board. */
void ekb_fault_report(const uint32_t *frame, const char *what);
#endif
