/* Test driver for the generated policy (host and Cortex-M4F under QEMU semihosting). */
#include <stdint.h>
#include <stdio.h>

#include "policy.h"

#ifdef POLICY_SYSTICK
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#endif

int main(void)
{
    float obs[POLICY_OBS_DIM];
    float act[POLICY_ACT_DIM];
    long n = 0;
    int st = policy_self_test();
    FILE *in = fopen("in.bin", "rb");
    FILE *out = fopen("out.bin", "wb");
    printf("self_test %d\n", st);
    if (!in || !out) {
        printf("error: cannot open in.bin / out.bin\n");
        return 2;
    }
    while (fread(obs, sizeof(float), POLICY_OBS_DIM, in) == POLICY_OBS_DIM) {
        policy_forward(obs, act);
        if (fwrite(act, sizeof(float), POLICY_ACT_DIM, out) != POLICY_ACT_DIM) {
            printf("error: write failed\n");
            return 2;
        }
        n++;
    }
    fclose(in);
    fclose(out);
    printf("inferences %ld\n", n);
#ifdef POLICY_SYSTICK
    {
        uint32_t t0, t1;
        int r;
        SYST_RVR = 0xFFFFFFu;
        SYST_CVR = 0u;
        SYST_CSR = 5u; /* enable, processor clock, no interrupt */
        t0 = SYST_CVR;
        for (r = 0; r < TIMED_RUNS; r++) {
            policy_forward(obs, act);
        }
        t1 = SYST_CVR;
        printf("ticks %lu runs %d\n", (unsigned long)((t0 - t1) & 0xFFFFFFu), TIMED_RUNS);
    }
#endif
    return st == 0 ? 0 : 1;
}
