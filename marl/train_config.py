"""Typed configuration of a training run, one pydantic model per concern, and ``resolve_config``.

``resolve_config(name_or_path, overrides)`` is the one config pipeline: read the YAML (shipped name
or path), merge its ``base:``, apply ``key=value`` overrides (``marl.config``) and validate every
section into a ``RunConfig``: ``env`` -> ``envs.config.SwarmConfig`` or ``PettingZooEnvConfig``,
``agent`` -> ``agents.config.PolicyConfig``, ``optim`` / ``train`` / ``logging`` -> the models below,
``distributed`` -> ``DistributedConfig``; other sections (``eval``, ...) are kept for their owners.
Every model forbids unknown keys, so ``train.lrr=1e-3`` fails naming ``train.lrr`` before anything
is built; validating imports neither the trainer nor the simulator. The fully resolved config (all
defaults filled in) is what ``marl configs NAME`` prints and what a run directory stores.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.checkpoint import is_checkpoint_source
from agents.config import PolicyConfig
from agents.controllers import CONTROLLERS, check_gains
from envs.config import SwarmConfig
from marl.config import (
    apply_overrides,
    check_sections,
    format_validation_error,
    load_raw_config,
    parse_override,
)
from marl.devices import parse_device
from marl.distributed_config import DistributedConfig
from marl.optimizers import check_optimizer_name
from marl.pettingzoo_env import PettingZooEnvConfig, is_pettingzoo_env, pettingzoo_env_config

# Shared-parameter PPO is MAPPO with a centralised critic and IPPO with per-agent critics; the critic
# is the policy's (agents.config.PolicyConfig.critic), so train.algo sets it.
__all__ = [
    "RunConfig", "TrainConfig", "OptimConfig", "LoggingConfig", "ReplayConfig", "AnnealConfig", "BCTermConfig",
    "EdgeOptimConfig", "FMAConfig", "CRITIC_OF_ALGO", "apply_overrides", "parse_override", "resolve_config",
    "validate_run_config",
]
CRITIC_OF_ALGO = {"mappo": "central", "ippo": "local"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AnnealConfig(_Strict):
    """Collision-penalty annealing: ``env.set_collision_scale`` rises linearly from ``start`` to 1."""

    collision_steps: int = Field(
        0, ge=0, description="agent steps over which the collision penalty scale goes from start to 1 (0 = off)"
    )
    start: float = Field(0.0, ge=0, le=1, description="collision penalty scale at the first step")


class ReplayConfig(_Strict):
    """Collision replay buffer of quad-swarm-rl (see ``marl.replay``). Off by default."""

    enabled: bool = False
    snapshot_seconds: float = Field(0.5, gt=0, description="env time between state snapshots")
    history_seconds: float = Field(3.0, gt=0, description="env time of snapshots kept")
    lookback_seconds: float = Field(1.5, ge=0, description="a crash stores the state at least this long before it")
    capacity: int = Field(20, ge=1, description="crash events kept (the oldest is dropped)")
    max_replays: int = Field(10, ge=1, description="times one event is replayed before it is dropped")
    prob: float = Field(0.75, ge=0, le=1, description="probability that a new episode starts from a replay")
    max_crashes: float = Field(
        1.0, gt=0, description="replay only while recent episodes average fewer crashed drones than this"
    )
    recent_episodes: int = Field(100, ge=1, description="episodes in the crash average")

    @model_validator(mode="after")
    def _history_covers_lookback(self) -> ReplayConfig:
        if self.history_seconds < self.lookback_seconds + self.snapshot_seconds:
            raise ValueError(
                f"history_seconds={self.history_seconds} must be >= lookback_seconds + snapshot_seconds "
                f"= {self.lookback_seconds + self.snapshot_seconds}"
            )
        return self


class TrainConfig(_Strict):
    """The rollout and PPO update loop (shared-parameter MAPPO / IPPO over the batched vector env)."""

    algo: Literal["mappo", "ippo"] = Field(
        "mappo", description="mappo: the policy's central critic; ippo: its local critic (sets agent.critic)"
    )
    total_agent_steps: int = Field(20_000_000, ge=1, description="agent steps (envs x drones x control steps)")
    num_envs: int = Field(1024, ge=1)
    rollout_steps: int = Field(32, ge=1, description="control steps per env between updates")
    epochs: int = Field(4, ge=1)
    minibatches: int = Field(4, ge=1, description="minibatches per epoch (split over env rows)")
    lr: float = Field(3e-4, gt=0)
    lr_decay: bool = Field(True, description="decay the learning rate linearly to lr_final_fraction * lr")
    lr_final_fraction: float = Field(0.0, ge=0, le=1)
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0, description="PPO ratio clip")
    clip_value_loss: bool = True
    value_clip: float = Field(0.2, gt=0, description="clip of the value change (normalised units)")
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    norm_adv: bool = True
    norm_value: bool = Field(True, description="the critic predicts running-normalised returns")
    target_kl: float | None = Field(None, gt=0, description="stop the epochs of an update early above this KL")
    actor_parts: list[str] | None = Field(
        None, min_length=1, description="the actor's parts (top-level module or parameter names, e.g. [near, column] "
        "of a close-range actor) that PPO updates; the others stay as they are, the critic always trains (None: all)"
    )
    anneal: AnnealConfig = AnnealConfig()
    replay: ReplayConfig = ReplayConfig()
    eval_every: int = Field(0, ge=0, description="updates between evaluations (0 = only at the end, if available)")
    eval_episodes: int = Field(32, ge=1)
    checkpoint_every: int = Field(10, ge=1, description="updates between checkpoints (and one at the end)")
    threads: int = Field(2, ge=1, description="cores the run is pinned to (and torch threads)")
    overlap: bool = Field(False, description="collect the next rollout in a background thread while the learner "
                          "updates, with the weights from before that update (one update of lag; torch then runs "
                          "one thread in each; see marl.overlap)")
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        parse_device(v)
        return v

    @property
    def torch_threads(self) -> int:
        """torch's threads per Python thread: one each for the collector and the learner when overlapping."""
        return 1 if self.overlap else self.threads

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        if self.overlap and self.threads < 2:
            raise ValueError(f"train.overlap=true runs the collector and the learner on a core each, but "
                             f"train.threads={self.threads}: set train.threads >= 2 (or train.overlap=false)")
        if self.minibatches > self.num_envs * self.rollout_steps:
            raise ValueError(
                f"minibatches={self.minibatches} exceeds the {self.num_envs * self.rollout_steps} rows of a rollout "
                "(num_envs * rollout_steps)"
            )
        return self


class FocusConfig(_Strict):
    """``pretrain.focus``: in every DAgger round after behaviour cloning, fly ``envs`` more swarms with the
    student alone and keep, every step, only the states where a drone's proximity to a neighbour (the
    teacher's avoidance weight: 0 at 0.5 m gap, 1 at 0.05 m) reaches ``threshold``. The student's own
    near-misses are rare in the other rounds' data (its neighbour collisions are where it loses to
    ``pid_avoid``); this labels many of them with the teacher's recovery."""

    envs: int = Field(128, ge=1, description="student-only swarms flown per round for the near-miss states")
    threshold: float = Field(0.5, gt=0, le=1, description="neighbour proximity (0-1) from which a state is kept")


class CloseRangeFitConfig(_Strict):
    """``pretrain.close_range``: after DAgger (or ``init_from``), fit the near network of an ``agent.close_range``
    actor on many close states (``marl.imitation.fit_close_range``): per round ``swarms`` swarms flown by the
    policy, every step where some drone is within ``agent.close_range`` of a neighbour recorded and labelled by
    the teacher, the squared error taken over those drones only (DAgger alone records few: ~0.5 % of its
    drone-steps)."""

    swarms: int = Field(768, ge=1, description="policy-flown swarms (one episode each) per round whose close "
                        "states are kept")
    rounds: int = Field(1, ge=1, description="rounds of (fly, label, aggregate, refit): the later ones see the "
                        "states that the fitted near network leads to")
    fit_steps: int = Field(6000, ge=1, description="Adam minibatches of the near network's regression")
    batch: int = Field(128, ge=1, description="rows (env steps with a close drone) per minibatch")
    lr: float = Field(1e-3, gt=0)
    closing_weight: float = Field(0.0, ge=0, description="each gated sample's weight is 1 + this x the speed "
                                  "(m/s) at which it closes in on its gate's hazard (0: all equal)")
    # None, not False: earlier runs' resolved configs stay the same, so they still resume.
    lr_decay: bool | None = Field(None, description="each fit's learning rate falls linearly to 0 over its "
                                  "fit_steps (None/false: constant lr)")


class BCTermConfig(_Strict):
    """``pretrain.bc``: keep the teacher in RL (DAPG-style). PPO's actor loss gains
    ``coef_k * mean ||mu_theta(o) - a_teacher(o)||^2`` over the rollout's samples (squared error summed over
    the action dimensions, averaged over rows and agents), where the collector labels every observation
    it flies with the teacher's action (``pretrain.teacher``). ``coef_k`` decays with k, the actor updates
    done (updates after ``critic_warmup_updates``): ``coef * decay**k`` (geometric, DAPG's lambda0 * lambda1**k)
    or ``coef * (1 - k / updates)`` (linear); with ``updates`` > 0 it is 0 from the ``updates``-th actor
    update on and the collector stops calling the teacher."""

    coef: float = Field(0.0, ge=0, description="weight of the term at the first actor update (0: off, no teacher)")
    schedule: Literal["geometric", "linear"] = Field("geometric", description="how the weight decays per update")
    decay: float = Field(0.95, gt=0, le=1, description="geometric: factor on the weight per actor update")
    updates: int = Field(
        0, ge=0, description="actor updates after which the weight is 0 (linear: needs > 0; geometric: 0 = never)"
    )
    radius: float | None = Field(
        None, gt=0, description="only samples whose drone is within this distance of its goal (m), where the "
        "teacher is precise; the term is their mean (None: every sample)"
    )

    @model_validator(mode="after")
    def _linear_needs_updates(self) -> BCTermConfig:
        if self.schedule == "linear" and self.updates == 0:
            raise ValueError("updates must be > 0 with schedule='linear' (the actor updates over which coef goes to 0)")
        return self

    def coef_at(self, actor_updates: int) -> float:
        """The weight of the term in the update after ``actor_updates`` actor updates (0 before the actor trains)."""
        k = actor_updates
        if k < 0 or self.coef == 0.0 or (self.updates and k >= self.updates):
            return 0.0
        if self.schedule == "linear":
            return self.coef * (1.0 - k / self.updates)
        return self.coef * self.decay**k


class PretrainConfig(_Strict):
    """``pretrain:`` warm start before RL: DAgger of a built-in controller into the policy's action means
    (``marl.imitation.dagger``), then ``critic_warmup_updates`` PPO updates that train only the critic, so
    the imitated actor is not pushed around by a value function that has not learned yet (PIRLNav).
    ``train.total_agent_steps`` budgets the RL updates; the warm start's rollouts come on top and are
    counted in the run's agent steps and wall time (``pretrain.json`` has its own)."""

    teacher: str = Field("pid_avoid", description="what to imitate: a built-in controller (agents.controllers) "
                         "or a trained policy (run directory, checkpoint file or zoo:NAME), e.g. a large preset")
    # None, not {}: earlier runs' resolved configs stay the same, so they still resume.
    teacher_gains: dict[str, float] | None = Field(
        None, description="PIDConfig values of a controller teacher that differ from its defaults (names: "
        "agents.controllers.GAINS), e.g. {neighbour_safe: 0.2}: a wider margin for the student's errors"
    )
    iterations: int = Field(4, ge=0, description="DAgger rounds after behaviour cloning (0 = behaviour cloning)")
    beta0: float = Field(0.5, ge=0, le=1, description="teacher's share of the actions in DAgger round 1")
    beta_decay: float = Field(0.5, ge=0, le=1, description="factor on the teacher's share per further round")
    num_envs: int = Field(32, ge=1, description="swarms flown per round (one episode each)")
    fit_steps: int = Field(400, ge=1, description="minibatches of the regression after each round")
    batch: int = Field(64, ge=1, description="rows (env steps of all drones) per minibatch")
    optimizer: str = Field("adam", description="optimiser of the regression (sso or any registry name)")
    lr: float = Field(1e-3, gt=0)
    # None, not 0: earlier runs' resolved configs stay the same, so they still resume (as for bc below).
    hazard_weight: float | None = Field(
        None, ge=0, description="weight each imitated sample by 1 + this x its proximity to a column or drone "
        "(None = plain mean squared error)"
    )
    action_noise: float | None = Field(
        None, ge=0, description="std of Gaussian noise on every executed action of the DAgger rollouts (DART: "
        "the states stray, the labels stay the teacher's; None = no noise)"
    )
    lr_decay: bool | None = Field(None, description="each DAgger refit's learning rate falls linearly to 0 over "
                                  "its fit_steps (None/false: constant lr; gradient optimisers only)")
    focus: FocusConfig | None = Field(None, description="extra DAgger data from the student's near-misses (off "
                                      "when None; needs a controller teacher)")
    critic_warmup_updates: int = Field(5, ge=0, description="first PPO updates that leave the actor alone")
    init_from: str | None = Field(
        None, description="start from this trained policy instead of DAgger: a run directory, checkpoint file or "
        "zoo:NAME of the same architecture (its action log-std is replaced by agent.init_log_std)"
    )
    close_range: CloseRangeFitConfig | None = Field(
        None, description="fit the near network of an agent.close_range actor on many close states (off when None; "
        "needs agent.close_range and a controller teacher)")
    # None (not a zero-weight section) keeps the resolved config of runs without the term unchanged, so
    # they still resume from checkpoints written before the term existed.
    bc: BCTermConfig | None = Field(None, description="behaviour-cloning term in PPO's actor loss (off when None)")

    def bc_coef(self, update: int) -> float:
        """Weight of the BC term in PPO update ``update`` (0-based count of completed updates)."""
        return 0.0 if self.bc is None else self.bc.coef_at(update - self.critic_warmup_updates)

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: str) -> str:
        if v not in CONTROLLERS and not is_checkpoint_source(v):
            raise ValueError(f"unknown teacher {v!r}; allowed: {', '.join(CONTROLLERS)} or a trained policy (an "
                             "existing run directory, checkpoint file or zoo:NAME)")
        return v

    @field_validator("optimizer")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.lower() != "sso":
            check_optimizer_name(v)
        return v

    @field_validator("init_from")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is not None and not is_checkpoint_source(v):
            raise ValueError(f"init_from={v!r} is neither an existing run directory / checkpoint file nor zoo:NAME")
        return v

    @model_validator(mode="after")
    def _hazards_need_a_controller(self) -> PretrainConfig:
        if self.teacher_gains is not None:
            if self.teacher not in CONTROLLERS:
                raise ValueError(f"pretrain.teacher_gains needs a controller teacher ({', '.join(CONTROLLERS)}), "
                                 f"got teacher={self.teacher!r}")
            check_gains(self.teacher_gains)
        if (self.hazard_weight or self.focus is not None or self.close_range is not None) and (
                self.teacher not in CONTROLLERS):
            raise ValueError(f"pretrain.hazard_weight, pretrain.focus and pretrain.close_range need a controller "
                             f"teacher ({', '.join(CONTROLLERS)}), got teacher={self.teacher!r}")
        if self.lr_decay and self.optimizer.lower() in ("sso", "tpsgd"):
            raise ValueError(f"pretrain.lr_decay needs a gradient optimiser (adam or another registry name), got "
                             f"optimizer={self.optimizer!r}")
        if self.bc is not None and self.bc.coef > 0 and self.teacher == "pid_plan":
            # PPO's collector restores replayed snapshots mid-episode, which the planner would not see.
            raise ValueError("pretrain.bc needs a teacher that reads only the observation; teacher='pid_plan' "
                             "is told each episode's map and serves the DAgger warm start only")
        return self


class EdgeOptimConfig(_Strict):
    """The outer level of CommFormer's bi-level optimisation: the optimiser of the edge logits.

    Of every ``every`` PPO epochs (counted over the whole run) the last steps only this optimiser
    and the others only the policy optimiser, on the same PPO loss (the reference implementation's
    first-order alternation). ``every: 0`` trains the edges jointly with the policy instead.
    Ignored for policies without a communication graph.
    """

    name: str = Field("adam", description="any optimiser name of the registry")
    lr: float = Field(1e-4, gt=0)
    every: int = Field(5, ge=0, description="every k-th PPO epoch steps the edges (0 = joint, one optimiser)")
    settings: dict[str, Any] = Field(default_factory=dict, description="further keywords for the optimiser")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        check_optimizer_name(v)
        return v


class FMAConfig(_Strict):
    """``optim.name: sso``: SSO's functional mirror ascent (optim.sso.fma_policy_update) replaces PPO's
    clipped policy step; the critic keeps a gradient optimiser (``value_optimizer`` at train.lr)."""

    # Measured on quickstart (32 minibatches x 4 epochs = 128 mirror steps per update): eta 1 diverged
    # within 3 updates (KL per step in the thousands); eta 0.3 had 70-80 % of its steps exceed max_kl;
    # eta 0.05 moved the policy by a KL of 2e-5 to 2e-4 per step with none rejected.
    eta: float = Field(0.05, gt=0, description="mirror step size: the KL(pi_t || pi) term is weighted 1 / eta")
    inner_steps: int = Field(5, ge=1, description="cheap inner steps on the surrogate per minibatch")
    inner: str = Field("armijo", description="inner optimiser: armijo (gradient descent + backtracking) or a name")
    armijo_init_step: float = Field(0.05, gt=0, description="first trial step of armijo (then halved per backtrack)")
    inner_lr: float = Field(1e-3, gt=0, description="learning rate of a named inner optimiser (not armijo)")
    kl: Literal["analytic", "sample"] = "analytic"
    max_kl: float = Field(
        0.05, gt=0, description="a minibatch step whose KL(pi_t || pi) exceeds this is undone (logged as rejected)"
    )
    value_optimizer: str = Field("adam", description="optimiser of the critic's value loss")

    @field_validator("inner", "value_optimizer")
    @classmethod
    def _known(cls, v: str, info: Any) -> str:
        if info.field_name == "inner" and v == "armijo":
            return v
        check_optimizer_name(v)
        if v.lower() == "sso":
            raise ValueError("sso cannot be its own inner or value optimiser; use armijo, adam, sgd, ...")
        return v


class OptimConfig(_Strict):
    """Optimiser by name (``marl.optimizers.make_optimizer``) and its settings; lr lives in ``train``.

    eps, betas, weight_decay and momentum apply to adam, adamw, sgd and rmsprop; any other first-order
    name of the ``optim`` registry (lion, lamb, ...) gets weight_decay (when set) and ``settings``.
    """

    name: str = "adam"
    eps: float = Field(1e-5, gt=0, description="adam/adamw/rmsprop epsilon")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, description="sgd/rmsprop momentum")
    settings: dict[str, Any] = Field(default_factory=dict, description="further keywords for the optimiser")
    edge: EdgeOptimConfig = EdgeOptimConfig()
    fma: FMAConfig = FMAConfig()

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        check_optimizer_name(v)
        return v

    def kwargs(self) -> dict[str, Any]:
        """The settings that the chosen optimiser takes."""
        name = self.name.lower()
        if name in ("adam", "adamw"):
            base: dict[str, Any] = dict(eps=self.eps, betas=self.betas, weight_decay=self.weight_decay)
        elif name == "rmsprop":
            base = dict(eps=self.eps, momentum=self.momentum, weight_decay=self.weight_decay)
        elif name == "sgd":
            base = dict(momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            base = dict(weight_decay=self.weight_decay) if self.weight_decay else {}
        return {**base, **self.settings}


class LoggingConfig(_Strict):
    """Where progress goes besides metrics.jsonl (always written)."""

    tensorboard: bool = True
    progress: bool = Field(True, description="live rich progress bar (only on a terminal)")
    episode_window: int = Field(
        0, ge=0, description="finished episodes averaged in the logged episode metrics (0 = num_envs)"
    )


class RunConfig(BaseModel):
    """A fully validated experiment for training."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = "run"
    description: str = ""
    seed: int = 0
    env: SwarmConfig | PettingZooEnvConfig
    agent: PolicyConfig = PolicyConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    logging: LoggingConfig = LoggingConfig()
    distributed: DistributedConfig = DistributedConfig()
    pretrain: PretrainConfig | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="sections training does not read (eval, ...)")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data (what config.yaml holds)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed}
        for key in ("env", "agent", "optim", "train", "logging", "distributed", "pretrain"):
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else copy.deepcopy(value)
        out.update(copy.deepcopy(self.extra))
        return out


def validate_run_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate every section that training reads; ValueError names the section and field."""
    check_sections(raw, source)
    out: dict[str, Any] = {}
    if is_pettingzoo_env(raw.get("env")):
        try:
            out["env"] = pettingzoo_env_config(raw["env"])
        except ValidationError as err:
            raise ValueError(f"{source}: {format_validation_error(err, 'env')}") from None
    for key, model in (("env", SwarmConfig), ("optim", OptimConfig), ("train", TrainConfig),
                       ("logging", LoggingConfig), ("distributed", DistributedConfig), ("pretrain", PretrainConfig)):
        if key in out or (key == "pretrain" and raw.get(key) is None):
            continue
        section = raw.get(key) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: section {key!r} must be a mapping, got {type(section).__name__}")
        try:
            out[key] = model(**section)
        except ValidationError as err:
            raise ValueError(f"{source}: {format_validation_error(err, key)}") from None
    if isinstance(out["env"], PettingZooEnvConfig) and out["train"].replay.enabled:
        raise ValueError(f"{source}: train.replay.enabled=true needs the simulator (env snapshots); "
                         "a PettingZoo env has none: set it to false")
    agent = raw.get("agent") or {}
    if not isinstance(agent, dict):
        raise ValueError(f"{source}: section 'agent' must be a mapping, got {type(agent).__name__}")
    algo = out["train"].algo
    critic = CRITIC_OF_ALGO[algo]
    if agent.get("critic", critic) != critic:
        raise ValueError(
            f"{source}: agent.critic={agent['critic']!r} contradicts train.algo={algo!r} "
            f"(mappo uses the central critic, ippo the local one); set one of them"
        )
    try:
        out["agent"] = PolicyConfig(**{**agent, "critic": critic})
    except ValidationError as err:
        raise ValueError(f"{source}: {format_validation_error(err, 'agent')}") from None
    if out["optim"].name.lower() == "sso" and out["agent"].name == "commformer":
        raise ValueError(
            f"{source}: optim.name='sso' cannot train agent.name='commformer': SSO's mirror ascent needs one fixed "
            "objective per minibatch, while CommFormer resamples its graph on every call and needs the edge "
            "optimiser and gate penalty of the clipped update; use another optim.name (adam, lion, ...)"
        )
    if "pretrain" in out and out["pretrain"].close_range is not None and out["agent"].close_range is None:
        raise ValueError(f"{source}: pretrain.close_range fits the near network of a close-range actor: set "
                         "agent.close_range (m, e.g. 0.29) or remove pretrain.close_range")
    if "pretrain" in out and not isinstance(out["env"], SwarmConfig):
        raise ValueError(f"{source}: pretrain imitates a quadrotor controller and needs the simulator env; "
                         "remove the pretrain section for a PettingZoo env")
    parts = out["train"].actor_parts
    if parts is not None and (out["optim"].name.lower() == "sso" or out["agent"].name == "commformer"):
        raise ValueError(f"{source}: train.actor_parts={parts} restricts the clipped PPO update; "
                         "optim.name='sso' and agent.name='commformer' have updates of their own: remove it")
    bc = out["pretrain"].bc if "pretrain" in out else None
    if bc is not None and bc.coef > 0:
        if out["optim"].name.lower() == "sso":
            raise ValueError(f"{source}: pretrain.bc.coef={bc.coef} adds a term to the clipped PPO loss, which "
                             "optim.name='sso' replaces; set pretrain.bc.coef=0 or another optim.name (adam, ...)")
        if out["distributed"].backend != "none":
            raise ValueError(f"{source}: pretrain.bc.coef={bc.coef} needs the teacher's labels of the local "
                             f"collector; distributed.backend={out['distributed'].backend!r} does not send them: "
                             "set pretrain.bc.coef=0 or distributed.backend=none")
    if out["train"].overlap and out["distributed"].backend != "none":
        raise ValueError(f"{source}: train.overlap=true overlaps the local collector with the update; "
                         f"distributed.backend={out['distributed'].backend!r} collects on remote workers: "
                         "set train.overlap=false or distributed.backend=none")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{source}: seed must be an integer, got {seed!r}")
    extra = {k: v for k, v in raw.items() if k not in ("name", "description", "seed", *out)}
    return RunConfig(
        name=str(raw.get("name") or "run"), description=str(raw.get("description") or ""), seed=seed,
        extra=extra, **out,
    )


def resolve_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The one config pipeline: read an experiment (shipped name or YAML path), merge its ``base:``,
    apply ``key=value`` overrides and validate every section; ValueError names the offending field."""
    source, raw = load_raw_config(name_or_path)
    return validate_run_config(apply_overrides(raw, list(overrides or [])), source)
