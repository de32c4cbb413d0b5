"""Imitation of a teacher swarm policy: behaviour cloning (BC) and DAgger, with any optimiser by name.

    from marl.imitation import behaviour_cloning, dagger, make_student, quickstart_env
    env_cfg = quickstart_env()                                  # resolve_config("quickstart").env
    bc = behaviour_cloning(make_student("attention", env_cfg), env_cfg, optimizer="sso")
    dg = dagger(make_student("attention", env_cfg), env_cfg, iterations=3)

The teacher is a callable obs [E, M, D] -> actions [E, M, 4] (default: the built-in ``pid``); the
student's action means are regressed on its labels (``fit``: ``sso`` or any ``optim`` name).
``data``: data, teacher, students, rollouts; ``fit``: the regression, BC and DAgger. The tpSGD
distillation study lives in ``marl.bench.studies.distill``; the design: docs/design/imitation.md.
"""

from marl.imitation.data import (
    ACT_DIM,
    ImitationData,
    RolloutResult,
    evaluate_closed_loop,
    imitation_loss,
    make_student,
    make_teacher,
    mlp_student,
    quickstart_env,
    record_teacher,
    rollout,
    student_actions,
)
from marl.imitation.fit import (
    BCResult,
    DAggerIteration,
    DAggerResult,
    FitResult,
    behaviour_cloning,
    check_optimizer,
    dagger,
    fit,
    fit_close_range,
    mse_eta,
)

__all__ = [
    "ACT_DIM",
    "BCResult",
    "DAggerIteration",
    "DAggerResult",
    "FitResult",
    "ImitationData",
    "RolloutResult",
    "behaviour_cloning",
    "check_optimizer",
    "dagger",
    "evaluate_closed_loop",
    "fit",
    "fit_close_range",
    "imitation_loss",
    "make_student",
    "make_teacher",
    "mlp_student",
    "mse_eta",
    "quickstart_env",
    "record_teacher",
    "rollout",
    "student_actions",
]
