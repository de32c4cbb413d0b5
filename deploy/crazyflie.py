"""A Crazyflie out-of-tree controller template (C) that runs the exported policy, and stubs to compile it.

The template (``CONTROLLER_C``: deploy/c/controller_policy.c, written next to policy.c) implements the
firmware's out-of-tree controller hooks: state estimate -> observation (the simulator's layout, see
policy.h) -> ``policy_forward`` -> motor thrust fractions. It is hand-written C; ``STUBS_H``
(deploy/c/stabilizer_types.h) are minimal stand-ins for the firmware's types so the tests can compile
and run it on the host with the same sanitizer flags as the policy (it is not firmware code).

Conventions the template relies on (matching envs/): world frame x forward, y left, z up; rotation
matrix body -> world from the estimator's quaternion, row-major; angular rate in rad/s (the firmware's
gyro is in deg/s); the goal is the setpoint position; the obstacle SDF patch is filled with the
simulator's "no obstacle" value (sdf_max) unless the application provides a map; neighbours come from
a peer table the application fills (e.g. from P2P broadcasts), unused slots are placed far away.
"""

from __future__ import annotations

from deploy.export_c import c_source

# The template, the host stand-ins and the host test's main are plain files in deploy/c/ (package data).
CONTROLLER_C = c_source("controller_policy.c")
STUBS_H = c_source("stabilizer_types.h")
STUB_MAIN_C = c_source("controller_test_main.c")
