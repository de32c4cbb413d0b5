/* Minimal Cortex-M4F start-up: vector table, FPU enable, newlib's _start (semihosting crt0). */
#include <stdint.h>

extern void _start(void);
extern uint32_t __stack_top;
void Reset_Handler(void);
void Default_Handler(void);

void Default_Handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top), Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0,
    Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};

void Reset_Handler(void)
{
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: full access to CP10 / CP11 (the FPU) */
    __asm volatile("dsb\n isb");
    _start();
    for (;;) {
    }
}
