/* Minimal host stand-ins for the Crazyflie firmware types the template uses (tests only). */
#ifndef STABILIZER_TYPES_H
#define STABILIZER_TYPES_H
#include <stdbool.h>
#include <stdint.h>

#define RATE_MAIN_LOOP 1000
#define RATE_DO_EXECUTE(RATE_HZ, TICK) ((TICK % (RATE_MAIN_LOOP / RATE_HZ)) == 0)

typedef struct { float x, y, z; } point_t;
typedef struct { float x, y, z; } velocity_t;
typedef struct { float x, y, z; } acc_t;
typedef struct { float roll, pitch, yaw; } attitude_t;
typedef struct { float x, y, z, w; } quaternion_t;
typedef struct { float x, y, z; } Axis3f;
typedef struct {
    attitude_t attitude;
    quaternion_t attitudeQuaternion;
    point_t position;
    velocity_t velocity;
    acc_t acc;
} state_t;
typedef struct { Axis3f gyro; Axis3f acc; } sensorData_t;
typedef struct { point_t position; velocity_t velocity; } setpoint_t;
typedef enum { controlModeLegacy = 0, controlModeForceTorque, controlModeForce } control_mode_t;
typedef struct {
    control_mode_t controlMode;
    float normalizedForces[4];
} control_t;

void controllerOutOfTreeInit(void);
bool controllerOutOfTreeTest(void);
void controllerOutOfTree(control_t *control, const setpoint_t *setpoint, const sensorData_t *sensors,
                         const state_t *state, const uint32_t tick);
void policy_build_observation(const state_t *state, const sensorData_t *sensors, const setpoint_t *setpoint,
                              float *obs);
#endif
