/* Host test of the controller template: hover at the setpoint, level, at rest. */
#include <stdio.h>

#include "policy.h"
#include "stabilizer_types.h"

int main(void)
{
    state_t state = {{0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 1.0f}, {0.5f, -0.2f, 1.0f}, {0.0f, 0.0f, 0.0f},
                     {0.0f, 0.0f, 0.0f}};
    sensorData_t sensors = {{0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f}};
    setpoint_t setpoint = {{0.5f, -0.2f, 1.0f}, {0.0f, 0.0f, 0.0f}};
    control_t control = {controlModeLegacy, {0.0f, 0.0f, 0.0f, 0.0f}};
    float obs[POLICY_OBS_DIM];
    int m;
    controllerOutOfTreeInit();
    if (!controllerOutOfTreeTest()) {
        printf("self-test failed\n");
        return 1;
    }
    policy_build_observation(&state, &sensors, &setpoint, obs);
    controllerOutOfTree(&control, &setpoint, &sensors, &state, 0u);
    printf("obs");
    for (m = 0; m < POLICY_OBS_DIM; m++) {
        printf(" %.6f", (double)obs[m]);
    }
    printf("\nforces");
    for (m = 0; m < 4; m++) {
        printf(" %.6f", (double)control.normalizedForces[m]);
    }
    printf("\nmode %d\n", (int)control.controlMode);
    return 0;
}
