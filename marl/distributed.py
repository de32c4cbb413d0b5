"""Distributed training on a Ray cluster: rollout workers as Ray actors, one learner that updates and broadcasts.

    marl train quickstart distributed.backend=ray distributed.workers=4          # a local Ray instance
    marl train quickstart distributed.backend=ray distributed.address=auto ...   # join the cluster of `ray start`

The ``distributed`` section (:class:`DistributedConfig`) selects it; ``backend: none`` (the default)
is the single-machine ``marl.trainer.Trainer``, which never imports Ray. Ray is an optional extra
(``pip install .[distributed]``) and is imported only inside this module's functions.

How one update runs (synchronous, on-policy PPO as on one machine):

1. The learner (:class:`DistributedTrainer`, this process) puts the policy weights and the value-norm
   statistics into Ray's object store once (``ray.put``); every worker fetches that one object.
2. Each :class:`RolloutWorker` actor holds ``envs_per_worker`` environments of either backend (the
   simulator or a PettingZoo env, built by ``marl.trainer.make_vec_env``) and the acting policy
   (``build_policy``). It runs ``rollout_steps`` control steps exactly as ``Trainer.collect`` does
   (it *is* ``Trainer.collect`` over its share: truncation bootstrap, collision replay, annealing at
   the run's global step count) and returns obs, actions, log-probs, values, rewards, dones, the
   bootstrap value of its last observation and the metrics of the episodes that finished.
3. The learner writes worker ``i``'s rollout into env columns ``[i*E, (i+1)*E)`` of its buffer, adds
   the episodes to its window (in worker order), computes GAE and runs ``ppo_update``, then logs and
   checkpoints as ``marl.trainer.train`` always does.

One update collects ``workers x envs_per_worker`` envs; ``envs_per_worker`` defaults to
``train.num_envs / workers`` (the same batch as on one machine, split), and when set explicitly the
batch becomes ``workers x envs_per_worker`` (what the run's checkpoint records as ``train.num_envs``).

Seeds: a worker whose envs start at update ``u`` (the first update, after a restart, after a resume)
seeds everything with ``seed + index + workers * u``; worker 0 of a fresh run uses ``seed`` itself,
so one worker with all the envs reproduces the single-machine run's numbers exactly. A run without
failures is reproducible; a restart changes only the restarted worker's episodes.

Fault tolerance: workers are actors with ``max_restarts``; a worker that dies (process killed, node
lost, result lost, silent past ``rollout_timeout_s``) while its rollout is in flight is replaced by a fresh actor
and only *its* rollout is requested again, with the same weights: the rollouts that other workers
completed in that update are kept, so every update still holds exactly the budgeted agent steps. A
worker that Ray restarted between updates starts new episodes at its next rollout. Each worker slot
may be restarted ``max_restarts`` times in a session; one more failure stops the run with an error
(the last checkpoint is intact, resume continues from it).

Checkpoint and resume: the learner's checkpoint holds what it holds on one machine (policy,
optimisers, value norm, RNGs, counters, episode window) except the simulator snapshot: the env
states live on the workers, which on a resume start fresh episodes from fresh seeds (as a
PettingZoo run does on one machine). A single-machine checkpoint resumes distributed, and the worker
count may change on resume (``distributed.*`` are resumable changes) while the batch
(``train.num_envs``) stays the same. A distributed checkpoint has no simulator snapshot for a
single-machine Trainer: continue it here (``workers: 1`` runs on one machine with a local Ray).

Bad input fails before training starts: an address where no Ray cluster answers within
``connect_timeout_s`` (a TCP probe, then ``ray.init`` with its GCS retries capped to as long), or
more ``workers x cpus_per_worker`` than the cluster has CPUs, or workers that cannot all be placed
within ``placement_timeout_s``, raise :class:`DistributedError` (a ValueError: ``marl`` prints one
line and exits 2) naming the field. When this process is already connected to Ray (``ray.init`` by
the caller), that connection is used. Every node needs this project and the same Ray, Python and
torch versions installed (or a ``runtime_env`` that provides them).

What limits scaling: the learner is one process. Each update waits for the slowest worker, then the
workers idle while the learner runs PPO on all ``workers x envs_per_worker x rollout_steps`` rows;
throughput tends to ``batch / update time`` however many workers there are (Amdahl). Trajectories
(``obs_dim x agents`` floats per env step) travel to the learner every update, the weights (small
here) once per node. ``marl bench train --distributed --workers 1 2`` (``marl.bench_train``) measures
agent-steps/s against the worker count; the README's "Distributed training (Ray)" has the figures.

Config plumbing: ``RunConfig.distributed`` holds a :class:`DistributedConfig`; ``marl.train_config``
imports this module lazily (it builds on ``marl.trainer``, which imports ``marl.train_config``), and
``marl.trainer.open_trainer`` picks :class:`DistributedTrainer` for ``backend: ray``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from marl.ppo import NonFiniteError
from marl.rollout import RolloutBuffer
from marl.train_config import RunConfig
from marl.trainer import EpisodeWindow, Trainer

# Rollout keys a worker returns, copied into the learner's buffer at the worker's env columns.
ROLLOUT_KEYS = ("obs", "actions", "logprobs", "values", "rewards", "dones")
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"  # attempts (~1 s each) of ray.init to reach the cluster's GCS


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


class DistributedError(ValueError):
    """The cluster cannot run the ``distributed`` section as given (unreachable, too small)."""


class WorkerFailure(RuntimeError):
    """A rollout worker kept failing: it was restarted ``distributed.max_restarts`` times already."""


def worker_layout(cfg: RunConfig) -> tuple[int, int]:
    """(workers, envs per worker) of a run; ValueError names the fields when num_envs does not split."""
    dc, n = cfg.distributed, cfg.train.num_envs
    if dc.envs_per_worker is not None:
        return dc.workers, dc.envs_per_worker
    if n % dc.workers:
        raise ValueError(
            f"train.num_envs={n} does not split evenly over distributed.workers={dc.workers}; change one of them "
            "or set distributed.envs_per_worker (one update then collects workers x envs_per_worker envs)"
        )
    return dc.workers, n // dc.workers


def effective_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with train.num_envs = workers x envs_per_worker (the learner's batch); validated again."""
    workers, per = worker_layout(cfg)
    if workers * per == cfg.train.num_envs:
        return cfg
    train = type(cfg.train)(**{**cfg.train.model_dump(), "num_envs": workers * per})
    return cfg.model_copy(update={"train": train})


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast unless something accepts TCP connections at a ``host:port`` / ``ray://host:port`` address."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DistributedError(
            f"distributed.address={address!r} must be 'auto', 'host:port' or 'ray://host:port' (or unset for a "
            "local Ray instance)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise DistributedError(
            f"distributed.address={address!r}: no Ray cluster reachable at {host}:{port} within {timeout:g} s "
            f"({err.strerror or type(err).__name__}); start one with `ray start --head` or fix the address "
            "(distributed.connect_timeout_s sets the wait)"
        ) from None


@contextmanager
def _all_cores() -> Iterator[None]:
    """Lift this process's core pinning (``marl.bench.pinned``) while Ray starts, so its workers inherit all cores."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        pass
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def connect(dc: DistributedConfig) -> bool:
    """Connect this process to the Ray cluster of ``dc``; True when it started a local instance (to shut down).

    An already initialised Ray (the caller's ``ray.init``) is used as it is.
    """
    import logging

    import ray

    if dc.address not in (None, "auto", "local"):
        _check_reachable(dc.address, dc.connect_timeout_s)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING)
    if dc.runtime_env:
        kwargs["runtime_env"] = dc.runtime_env
    try:
        if dc.address is None:
            with _all_cores():
                ray.init(**kwargs)
            return True
        # Ray retries a GCS that does not answer for ~20 s; its own knob caps that at connect_timeout_s.
        wait = os.environ.get(GCS_WAIT_ENV)
        os.environ[GCS_WAIT_ENV] = wait or str(max(1, math.ceil(dc.connect_timeout_s)))
        try:
            ray.init(address=dc.address, **kwargs)
        finally:
            if wait is None:
                del os.environ[GCS_WAIT_ENV]
    except ConnectionError as err:
        raise DistributedError(
            f"distributed.address={dc.address!r}: no Ray cluster answered within {dc.connect_timeout_s:g} s "
            f"({' '.join(str(err).split())}); use the address `ray start --head` printed on the head node "
            "(or start one), or raise distributed.connect_timeout_s"
        ) from None
    return False


def check_capacity(dc: DistributedConfig) -> None:
    """DistributedError naming distributed.workers when the cluster has fewer CPUs than the workers reserve."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    need = dc.workers * dc.cpus_per_worker
    if need > cpus + 1e-9:
        raise DistributedError(
            f"distributed.workers={dc.workers} x distributed.cpus_per_worker={dc.cpus_per_worker:g} needs {need:g} "
            f"CPUs, but the Ray cluster has {cpus:g}; lower distributed.workers (or cpus_per_worker) or add nodes"
        )


# ---------------------------------------------------------------------------------------------- worker
class _BootstrapBuffer(RolloutBuffer):
    """A worker's buffer: GAE happens on the learner, so the rollout only keeps the bootstrap value."""

    def compute_gae(self, last_value: torch.Tensor, gamma: float, lam: float) -> None:
        self.last_value = last_value.clone()


class _WorkerTrainer(Trainer):
    """A worker's share of the run: its envs and acting policy; ``collect`` is the single-machine one."""

    global_start = 0  # the run's agent steps when this rollout began
    rollout_start = 0  # this worker's agent steps when this rollout began
    workers = 1  # every worker step is ``workers`` times as many agent steps of the run

    def _collision_scale(self) -> float:  # annealed over the run's agent steps, not this worker's
        own = self.agent_steps
        self.agent_steps = self.global_start + (own - self.rollout_start) * self.workers
        try:
            return super()._collision_scale()
        finally:
            self.agent_steps = own


class RolloutWorker:
    """One rollout worker (a Ray actor via ``ray.remote(RolloutWorker)``): envs + acting policy, no optimiser step.

    The envs are built at the first rollout (and after a restart) from the seed the learner sends.
    """

    def __init__(self, config: dict[str, Any], index: int, num_envs: int, workers: int, threads: int):
        from marl.train_config import validate_run_config

        torch.set_num_threads(threads)
        self.cfg = validate_run_config(config, f"rollout worker {index}")
        self.index, self.num_envs, self.workers = index, num_envs, workers
        self.trainer: _WorkerTrainer | None = None

    def ready(self) -> dict[str, Any]:
        """Where this worker runs (answers once the actor is placed and started)."""
        return {"index": self.index, "host": socket.gethostname(), "pid": os.getpid()}

    def stop_envs(self) -> None:
        """Drop the envs: the next rollout starts new ones from the seed it brings."""
        self.trainer = None

    def _start(self, seed: int) -> None:
        cfg = self.cfg
        train = cfg.train.model_copy(update={"num_envs": self.num_envs, "device": "cpu"})
        t = _WorkerTrainer(cfg.model_copy(update={"seed": seed, "train": train}), Path("."))
        t.buf.__class__ = _BootstrapBuffer
        t.workers = self.workers
        self.trainer = t

    @torch.no_grad()
    def sample(self, weights: dict[str, Any], seed: int, update: int, num_updates: int,
               agent_steps: int) -> dict[str, Any]:
        """One rollout with the broadcast weights; ``seed`` starts the envs when they are not running yet."""
        started = self.trainer is None
        if started:
            self._start(seed)
        t = self.trainer
        assert t is not None
        t.policy.load_state_dict(weights["model"])
        if t.value_norm is not None:
            t.value_norm.load_state_dict(weights["value_norm"])
        if hasattr(t.policy, "set_training_progress"):
            t.policy.set_training_progress(update, num_updates)
        t.update, t.global_start, t.rollout_start = update, agent_steps, t.agent_steps
        t.window = EpisodeWindow(1 << 62, t.window.always)  # every episode of this rollout
        t0 = time.perf_counter()
        finished = t.collect()
        out: dict[str, Any] = {key: getattr(t.buf, key) for key in ROLLOUT_KEYS}
        out.update(
            last_value=t.buf.last_value, episodes=dict(t.window.values), finished=finished,
            started=seed if started else None, collect_s=time.perf_counter() - t0,
            replay_events=len(t.replay.events), replay_stored=t.replay.stored,
        )
        return out


# ---------------------------------------------------------------------------------------------- learner
class DistributedTrainer(Trainer):
    """The learner: Trainer's update, checkpoint and counters, with rollouts gathered from Ray workers.

    Connects and places the workers in the constructor (raising DistributedError or ValueError
    before anything is written); ``close()`` releases them (and a Ray instance it started).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path):
        self.workers: list[Any] = []
        self._owns_ray = False
        self._worker_cls: Any = None  # ray.remote(RolloutWorker), made once
        self.num_workers, self.envs_per_worker = worker_layout(cfg)
        cfg = effective_config(cfg)
        dc = cfg.distributed
        self._owns_ray = connect(dc)
        try:
            check_capacity(dc)
            # The learner's own env is a one-env probe: it tells the layout; the envs live on the workers.
            probe = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_envs": 1})})
            super().__init__(probe, run_dir)
            self.cfg = cfg
            tc = cfg.train
            self.buf = RolloutBuffer(tc.rollout_steps, tc.num_envs, self.num_agents, self.env.obs_dim,
                                     self.policy.act_dim, self.device)
            self.window = EpisodeWindow(cfg.logging.episode_window or tc.num_envs, self.window.always)
            self.steps_per_update = tc.num_envs * tc.rollout_steps * self.num_agents
            self.num_updates = math.ceil(tc.total_agent_steps / self.steps_per_update)
            self.restarts = [0] * self.num_workers  # per worker slot, this session
            self.rollouts_received = 0
            self._running = [False] * self.num_workers  # whether the slot's envs have started
            self._replay = [(0, 0)] * self.num_workers
            self.hosts: list[dict[str, Any]] = []
            self._spawn_all()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ workers
    def _actor(self, index: int) -> Any:
        import ray

        dc = self.cfg.distributed
        options: dict[str, Any] = dict(num_cpus=dc.cpus_per_worker, max_restarts=dc.max_restarts,
                                       max_task_retries=0, scheduling_strategy="SPREAD")
        if dc.runtime_env:
            options["runtime_env"] = dc.runtime_env
        if self._worker_cls is None:
            self._worker_cls = ray.remote(RolloutWorker)
        return self._worker_cls.options(**options).remote(
            self.cfg.to_dict(), index, self.envs_per_worker, self.num_workers, max(1, int(dc.cpus_per_worker))
        )

    def _spawn_all(self) -> None:
        import ray

        dc = self.cfg.distributed
        self.workers = [self._actor(i) for i in range(self.num_workers)]
        refs = [w.ready.remote() for w in self.workers]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=dc.placement_timeout_s)
        if len(done) < len(refs):
            raise DistributedError(
                f"only {len(done)} of distributed.workers={dc.workers} rollout workers started within "
                f"distributed.placement_timeout_s={dc.placement_timeout_s:g} s (the cluster's free CPUs: "
                f"{ray.available_resources().get('CPU', 0):g}); lower distributed.workers or free the cluster"
            )
        self.hosts = ray.get(done)

    def _replace(self, index: int, err: BaseException) -> None:
        """Put a fresh actor in a failed worker's slot (or stop when its restarts are used up)."""
        import ray

        dc = self.cfg.distributed
        if self.restarts[index] >= dc.max_restarts:
            raise WorkerFailure(
                f"rollout worker {index} failed again after {self.restarts[index]} restarts "
                f"(distributed.max_restarts={dc.max_restarts}): {type(err).__name__}: {err}"
            ) from err
        try:
            ray.kill(self.workers[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.restarts[index] += 1
        self._running[index] = False
        self.workers[index] = self._actor(index)

    def _submit(self, index: int, weights: Any) -> Any:
        """Ask worker ``index`` for one rollout with the weights in ``weights`` (an ObjectRef)."""
        seed = self.cfg.seed + index + self.num_workers * self.update
        return self.workers[index].sample.remote(weights, seed, self.update, self.num_updates, self.agent_steps)

    def _gather(self) -> list[dict[str, Any]]:
        """One rollout of every worker; a failed worker is replaced and asked again, completed ones are kept."""
        import ray
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

        state = {"model": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()},
                 "value_norm": {k: v.cpu() for k, v in self.value_norm.state_dict().items()}
                 if self.value_norm is not None else {}}
        weights = ray.put(state)
        pending = {self._submit(i, weights): i for i in range(self.num_workers)}

        def retry(i: int, err: BaseException) -> None:  # replace the worker and ask the new one
            self._replace(i, err)
            pending[self._submit(i, weights)] = i

        results: dict[int, dict[str, Any]] = {}
        timeout = self.cfg.distributed.rollout_timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready:  # nobody answered in time: the pending workers are treated as dead
                for ref, i in list(pending.items()):
                    del pending[ref]
                    retry(i, TimeoutError(f"no rollout within {timeout:g} s (distributed.rollout_timeout_s)"))
                continue
            ref = ready[0]
            i = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, ObjectLostError) as err:
                retry(i, err)
                continue
            except RayTaskError as err:  # the rollout itself raised: as on one machine
                if isinstance(err.cause, NonFiniteError):
                    raise err.cause from None
                raise
            if result["started"] is not None and self._running[i]:
                self.restarts[i] += 1  # Ray restarted this actor between rollouts: new episodes, no data lost
            self._running[i] = True
            results[i] = result
            self.rollouts_received += 1
        return [results[i] for i in range(self.num_workers)]

    # ------------------------------------------------------------------ one update
    @torch.no_grad()
    def collect(self) -> int:
        """Fill the buffer with every worker's rollout; returns the number of episodes that finished."""
        tc, buf, per = self.cfg.train, self.buf, self.envs_per_worker
        results = self._gather()
        last_value = torch.zeros(tc.num_envs, self.num_agents, device=self.device)
        finished = 0
        for i, r in enumerate(results):
            cols = slice(i * per, (i + 1) * per)
            for key in ROLLOUT_KEYS:
                getattr(buf, key)[:, cols] = r[key].to(self.device)
            last_value[cols] = r["last_value"].to(self.device)
            finished += self.window.add(r["episodes"])
            self._replay[i] = (r["replay_events"], r["replay_stored"])
        self.vec_steps += tc.rollout_steps
        self.agent_steps += self.steps_per_update
        if self.swarm:  # the probe env carries the run's collision scale (for the metrics record)
            self.env.set_collision_scale(self._collision_scale())
        # Rewards and observations were checked for NaN/inf by each worker's collect (re-raised in _gather).
        buf.compute_gae(last_value, tc.gamma, tc.gae_lambda)
        return finished

    def train_step(self) -> dict[str, Any]:
        record = super().train_step()
        record["workers"] = self.num_workers
        record["worker_restarts"] = sum(self.restarts)
        if self.cfg.train.replay.enabled:
            record["replay_events"] = sum(e for e, _ in self._replay)
            record["replay_stored"] = sum(s for _, s in self._replay)
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Trainer's checkpoint without a simulator snapshot (the envs live on the workers)."""
        state = super().state_dict()
        state.pop("env", None)
        return state

    def load_state_dict(self, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore the learner; the workers start fresh episodes at their next rollout."""
        swarm, self.swarm = self.swarm, False  # no env snapshot to restore: the probe env is reset
        try:
            super().load_state_dict(ckpt, source)
        finally:
            self.swarm = swarm
        for i, w in enumerate(self.workers):  # envs already running (none in train()) start over
            if self._running[i]:
                w.stop_envs.remote()
        self._running = [False] * self.num_workers

    def close(self) -> None:
        """Release the workers, and the local Ray instance when this trainer started it."""
        try:
            import ray
        except ImportError:
            return
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
