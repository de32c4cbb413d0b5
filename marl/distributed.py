"""Distributed training on Ray: the single-process learner with remote collectors (Ray actors).

    marl train quickstart distributed.backend=ray distributed.workers=4          # a local Ray instance
    marl train quickstart distributed.backend=ray distributed.address=auto ...   # join the cluster of `ray start`

:class:`RaySampler` is the trainer's rollout side for ``distributed.backend: ray``: it broadcasts
the learner's weights, gathers one rollout from each :class:`RemoteCollector` (a ``marl.collector.
Collector`` over ``envs_per_worker`` envs) into env columns of one buffer, and replaces failed
workers. Ray is an optional extra (``pip install .[distributed]``), imported only inside functions.
How an update runs, seeds, fault tolerance, resume and scaling: docs/design/distributed.md.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from agents.base import ActorCritic
from marl.collector import (
    BASE_EPISODE_KEYS,
    ROLLOUT_KEYS,
    Collector,
    EpisodeWindow,
    Progress,
    Rollout,
    seed_everything,
)
from marl.distributed_config import DistributedConfig
from marl.ppo import NonFiniteError
from marl.rollout import RolloutBuffer
from marl.train_config import RunConfig, validate_run_config
from marl.vec_env import EnvInfo, build_policy, env_info

GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"  # attempts (~1 s each) of ray.init to reach the cluster's GCS


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
    """``cfg`` with train.num_envs = workers x envs_per_worker (the learner's batch)."""
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
    """Lift this process's core pinning (``marl.devices.pinned``) while Ray starts: its workers get all cores."""
    if not hasattr(os, "sched_setaffinity"):  # not on macOS
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
    import ray  # optional dependency: only a distributed run needs it

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
    import ray  # optional dependency

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    need = dc.workers * dc.cpus_per_worker
    if need > cpus + 1e-9:
        raise DistributedError(
            f"distributed.workers={dc.workers} x distributed.cpus_per_worker={dc.cpus_per_worker:g} needs {need:g} "
            f"CPUs, but the Ray cluster has {cpus:g}; lower distributed.workers (or cpus_per_worker) or add nodes"
        )


# ---------------------------------------------------------------------------------------------- worker
class RemoteCollector:
    """A Collector in a Ray actor (``ray.remote(RemoteCollector)``): envs and a policy copy, no optimiser.

    The envs start at the first rollout (and after a restart) from the seed the sampler sends, in the
    order a single-process trainer uses (seed, policy, envs).
    """

    def __init__(self, config: dict[str, Any], index: int, num_envs: int, threads: int):
        torch.set_num_threads(threads)
        self.cfg = validate_run_config(config, f"rollout worker {index}")
        self.index, self.num_envs = index, num_envs
        self.collector: Collector | None = None

    def ready(self) -> dict[str, Any]:
        """Where this worker runs (answers once the actor is placed and started)."""
        return {"index": self.index, "host": socket.gethostname(), "pid": os.getpid()}

    def stop_envs(self) -> None:
        """Drop the envs: the next rollout starts new ones from the seed it brings."""
        self.collector = None

    def sample(self, weights: dict[str, Any], seed: int, progress: Progress) -> dict[str, Any]:
        """One rollout with the broadcast weights; ``seed`` starts the envs when they are not running yet."""
        started = self.collector is None
        if self.collector is None:
            seed_everything(seed)
            info = env_info(self.cfg.env)
            policy = build_policy(self.cfg, info.spec, info.num_agents, info.num_actions, info.act_dim)
            self.collector = Collector(self.cfg, self.num_envs, seed, policy, device="cpu")
        t0 = time.perf_counter()
        r = self.collector.collect(weights, progress)
        out: dict[str, Any] = {key: getattr(r.buf, key) for key in ROLLOUT_KEYS}
        out.update(last_value=r.last_value, last_obs=r.last_obs, episodes=r.episodes, finished=r.finished,
                   stats=r.stats, episode_keys=self.collector.window.always, started=seed if started else None,
                   collect_s=time.perf_counter() - t0)
        return out


# ---------------------------------------------------------------------------------------------- sampler
class RaySampler:
    """The rollout side of a distributed run: ``workers`` remote collectors, one buffer of the whole batch.

    Connects and places the workers in the constructor (raising DistributedError or ValueError
    before anything is written); ``close()`` releases them (and a Ray instance it started).
    """

    def __init__(self, cfg: RunConfig, info: EnvInfo, policy: ActorCritic):
        self.cfg = cfg
        self.workers: list[Any] = []
        self._owns_ray = False
        self._worker_cls: Any = None  # ray.remote(RemoteCollector), made once
        self.num_workers, self.envs_per_worker = worker_layout(cfg)
        tc = cfg.train
        self.num_envs, self.num_agents = tc.num_envs, info.num_agents
        self.device = torch.device(tc.device)
        self.buf = RolloutBuffer(tc.rollout_steps, tc.num_envs, info.num_agents, info.obs_dim, policy.act_dim,
                                 self.device)
        # The keys every record holds are the collectors' (they know their env): taken from the first rollout.
        self.window = EpisodeWindow(cfg.logging.episode_window or tc.num_envs, BASE_EPISODE_KEYS)
        self.restarts = [0] * self.num_workers  # per worker slot, this session
        self.rollouts_received = 0
        self._running = [False] * self.num_workers  # whether the slot's envs have started
        self.hosts: list[dict[str, Any]] = []
        self._owns_ray = connect(cfg.distributed)
        try:
            check_capacity(cfg.distributed)
            self._spawn_all()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ workers
    def _actor(self, index: int) -> Any:
        import ray  # optional dependency

        dc = self.cfg.distributed
        options: dict[str, Any] = dict(num_cpus=dc.cpus_per_worker, max_restarts=dc.max_restarts,
                                       max_task_retries=0, scheduling_strategy="SPREAD")
        if dc.runtime_env:
            options["runtime_env"] = dc.runtime_env
        if self._worker_cls is None:
            self._worker_cls = ray.remote(RemoteCollector)
        return self._worker_cls.options(**options).remote(
            self.cfg.to_dict(), index, self.envs_per_worker, max(1, int(dc.cpus_per_worker))
        )

    def _spawn_all(self) -> None:
        import ray  # optional dependency

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
        import ray  # optional dependency

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

    def _submit(self, index: int, weights: Any, progress: Progress) -> Any:
        """Ask worker ``index`` for one rollout with the weights in ``weights`` (an ObjectRef)."""
        seed = self.cfg.seed + index + self.num_workers * progress.update
        return self.workers[index].sample.remote(weights, seed, progress)

    def _gather(self, weights: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
        """One rollout of every worker; a failed worker is replaced and asked again, completed ones are kept."""
        import ray  # optional dependency
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

        ref = ray.put({k: {n: v.detach().cpu() for n, v in d.items()} for k, d in weights.items()})
        pending = {self._submit(i, ref, progress): i for i in range(self.num_workers)}

        def retry(i: int, err: BaseException) -> None:  # replace the worker and ask the new one
            self._replace(i, err)
            pending[self._submit(i, ref, progress)] = i

        results: dict[int, dict[str, Any]] = {}
        timeout = self.cfg.distributed.rollout_timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready:  # nobody answered in time: the pending workers are treated as dead
                for r, i in list(pending.items()):
                    del pending[r]
                    retry(i, TimeoutError(f"no rollout within {timeout:g} s (distributed.rollout_timeout_s)"))
                continue
            i = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
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

    def collect(self, weights: dict[str, Any], progress: Progress) -> Rollout:
        """Every worker's rollout in env columns ``[i*E, (i+1)*E)`` of the buffer, episodes in worker order."""
        buf, per = self.buf, self.envs_per_worker
        results = self._gather(weights, progress)
        self.window.always = results[0]["episode_keys"]
        last_value = torch.zeros(self.num_envs, self.num_agents, device=self.device)
        last_obs = torch.zeros(self.num_envs, *buf.obs.shape[2:], device=self.device)
        finished = 0
        episodes: dict[str, list[torch.Tensor]] = {}
        for i, r in enumerate(results):
            cols = slice(i * per, (i + 1) * per)
            for key in ROLLOUT_KEYS:
                getattr(buf, key)[:, cols] = r[key].to(self.device)
            last_value[cols] = r["last_value"].to(self.device)
            last_obs[cols] = r["last_obs"].to(self.device)
            finished += self.window.add(r["episodes"])
            for key, values in r["episodes"].items():
                episodes.setdefault(key, []).append(values)
        # Every worker anneals by the run's step count, so they report the same collision scale.
        stats = dict(results[0]["stats"])
        for key in ("replay_events", "replay_stored"):
            if key in stats:
                stats[key] = sum(r["stats"][key] for r in results)
        return Rollout(buf, last_value, last_obs, {k: torch.cat(v) for k, v in episodes.items()}, finished, stats)

    def record(self) -> dict[str, Any]:
        """Workers and their restarts (for the metrics record)."""
        return {"workers": self.num_workers, "worker_restarts": sum(self.restarts)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The episode window; the envs, their snapshots and replay live on the workers."""
        return {"episodes": self.window.state_dict()}

    def generators(self) -> dict[str, torch.Generator]:
        """None here: the workers' generators restart from seeds."""
        return {}

    def load_state_dict(self, ckpt: dict[str, Any], seed: int) -> None:
        """Restore the window; running workers start fresh episodes at their next rollout (seeds by update)."""
        self.window.load_state_dict(ckpt["episodes"])
        for i, w in enumerate(self.workers):  # envs already running (none in train()) start over
            if self._running[i]:
                w.stop_envs.remote()
        self._running = [False] * self.num_workers

    def close(self) -> None:
        """Release the workers, and the local Ray instance when this sampler started it."""
        try:
            import ray  # optional dependency
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
