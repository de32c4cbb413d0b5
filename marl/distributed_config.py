"""The ``distributed`` section of a run config: where and how many Ray rollout workers.

A plain pydantic model with no Ray import, so ``marl.train_config`` types ``RunConfig.distributed``
without importing the trainer or Ray. ``backend: none`` (the default) trains in one process;
``backend: ray`` runs the same learner with remote collectors (``marl.distributed``). Design note:
docs/design/distributed.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DistributedConfig(BaseModel):
    """The ``distributed`` section: where and how many rollout workers (``backend: ray``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    backend: Literal["none", "ray"] = Field("none", description="none: one process; ray: rollout workers on Ray")
    address: str | None = Field(
        None, description="Ray cluster: 'auto' (the one `ray start` runs here), 'host:port' or 'ray://host:port'; "
        "none starts a local instance"
    )
    workers: int = Field(1, ge=1, description="rollout worker actors")
    envs_per_worker: int | None = Field(
        None, ge=1, description="envs of each worker (default train.num_envs / workers; if set, one update "
        "collects workers x envs_per_worker envs)"
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per worker (and its torch threads)")
    max_restarts: int = Field(3, ge=0, description="restarts of each worker slot before the run stops")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to reach distributed.address")
    placement_timeout_s: float = Field(60.0, gt=0, description="seconds for all workers to be placed and started")
    rollout_timeout_s: float = Field(600.0, gt=0, description="a worker silent this long is treated as dead")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of the workers (e.g. pip, env_vars)")
