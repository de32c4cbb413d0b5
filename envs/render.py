"""Episode videos from PyBullet's headless software renderer (ER_TINY_RENDERER, no display needed).

A recorded trajectory (positions and rotation matrices of every drone) is replayed kinematically in
a fresh DIRECT client holding the same columns, so a video can be made of an episode of either
backend. Frames are written with imageio: ``.mp4`` through imageio-ffmpeg's bundled ffmpeg, ``.gif``
through Pillow.
"""

from __future__ import annotations

import os

import imageio.v2 as imageio
import numpy as np
import pybullet as p

from envs.maps import FAR
from envs.pybullet_backend import rot_to_quat

COLUMN_DRAW_HEIGHT = 3.5  # m
DRONE_COLOURS = (
    (0.12, 0.47, 0.71, 1), (1.0, 0.5, 0.05, 1), (0.17, 0.63, 0.17, 1), (0.84, 0.15, 0.16, 1),
    (0.58, 0.4, 0.74, 1), (0.55, 0.34, 0.29, 1), (0.89, 0.47, 0.76, 1), (0.5, 0.5, 0.5, 1),
)


def render_episode(
    path: str,
    positions: np.ndarray,
    rotations: np.ndarray,
    goals: np.ndarray,
    obstacles: np.ndarray,
    radius: float,
    room_height: float = 10.0,
    arm: float = 0.046,
    control_hz: float = 100.0,
    fps: int = 25,
    size: tuple[int, int] = (480, 360),
    drone_scale: float = 3.0,
) -> str:
    """Write a video of one episode; returns ``path``.

    positions [T, M, 3], rotations [T, M, 3, 3], goals [M, 3], obstacles [O, 2] (inactive ones at
    FAR are skipped). Drones are drawn ``drone_scale`` times their size so that they show in a
    whole-room view; goals are small translucent spheres.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".mp4", ".gif"):
        raise ValueError(f"video path {path!r} must end in .mp4 or .gif")
    c = p.connect(p.DIRECT)
    try:
        plane = p.createVisualShape(
            p.GEOM_BOX, halfExtents=[6, 6, 0.01], rgbaColor=[0.85, 0.85, 0.8, 1], physicsClientId=c
        )
        p.createMultiBody(0, -1, plane, [0, 0, -0.01], physicsClientId=c)
        # Columns are drawn only a little above the flight band, so they do not hide the drones.
        height = min(room_height, COLUMN_DRAW_HEIGHT)
        for x, y in obstacles:
            if abs(x) >= FAR / 2:
                continue
            cyl = p.createVisualShape(
                p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=[0.45, 0.45, 0.45, 1], physicsClientId=c
            )
            p.createMultiBody(0, -1, cyl, [float(x), float(y), height / 2], physicsClientId=c)
        bodies = []
        half = arm * drone_scale
        for i, goal in enumerate(goals):
            colour = DRONE_COLOURS[i % len(DRONE_COLOURS)]
            ghost = p.createVisualShape(p.GEOM_SPHERE, radius=half, rgbaColor=[*colour[:3], 0.35], physicsClientId=c)
            p.createMultiBody(0, -1, ghost, goal.tolist(), physicsClientId=c)
            body = p.createVisualShape(
                p.GEOM_BOX, halfExtents=[half, half, half / 4], rgbaColor=list(colour), physicsClientId=c
            )
            bodies.append(p.createMultiBody(0, -1, body, [0, 0, 1], physicsClientId=c))
        # Look at the middle of the flown area from behind the starts, high enough to see over columns.
        lo, hi = positions[..., :2].min((0, 1)), positions[..., :2].max((0, 1))
        target = [*((lo + hi) / 2).tolist(), 1.0]
        back = max(4.0, 0.9 * float((hi - lo).max()))
        eye = [target[0], target[1] - 0.7 * back, target[2] + 1.3 * back]
        view = p.computeViewMatrix(eye, target, [0, 0, 1], physicsClientId=c)
        proj = p.computeProjectionMatrixFOV(60, size[0] / size[1], 0.1, 40, physicsClientId=c)
        every = max(1, int(round(control_hz / fps)))
        frames = []
        quats = rot_to_quat(rotations)  # [T, M, 4]
        for t in range(0, positions.shape[0], every):
            for body, pos, q in zip(bodies, positions[t], quats[t], strict=True):
                p.resetBasePositionAndOrientation(body, pos.tolist(), q.tolist(), physicsClientId=c)
            _, _, rgba, _, _ = p.getCameraImage(
                size[0], size[1], view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=c
            )
            frames.append(np.asarray(rgba, dtype=np.uint8).reshape(size[1], size[0], 4)[..., :3])
    finally:
        p.disconnect(physicsClientId=c)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=8)
    return path
