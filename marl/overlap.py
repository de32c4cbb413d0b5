"""Collection overlapped with the update (``train.overlap``): while the learner updates on one rollout, a
background thread collects the next one with the weights the learner had before that update.

Serially, each update waits for its rollout and the collector waits for the update, so one of the two
cores idles. Overlapped, both work at once; the price is a one-update lag: the rollout of update k+1 is
flown by the policy of update k-1 (its log-probs and values are that policy's). PPO's ratio is taken
against the log-probs the rollout was flown with, so the clip bounds the step from that policy, as in
asynchronous PPO (the lag is one update, not the many that IMPALA's V-trace corrects). The simulator and
torch's kernels release the GIL for most of a step, so a thread suffices (measured in docs/training.md,
"Collection beside the update").

The numbers do not depend on how the threads are scheduled: the collector and the learner each use their
own generators and their own copies of the weights, and the collector fills its two buffers in turn, so
the one in flight never overwrites the one being learned from. The episode window is fed as
rollouts are handed over, so logged means are the same however far the next rollout has got. A checkpoint
waits for the rollout in flight and saves the collector's state after it; a resume starts the pipeline
again (its first rollout is collected with the resumed weights), so a
resumed overlapped run is reproducible but not identical to one that was never stopped.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from marl.collector import Collector, EpisodeWindow, Progress, Rollout


def _snapshot(weights: dict[str, Any]) -> dict[str, Any]:
    """A copy of the learner's state dicts: the update changes its tensors in place while the thread loads them."""
    return {k: {n: t.detach().clone() if isinstance(t, torch.Tensor) else t for n, t in sd.items()}
            for k, sd in weights.items()}


class OverlappedSampler:
    """A :class:`Collector` (with two buffers) whose next rollout is collected while the learner updates.

    ``collect(weights, progress)`` returns the rollout for update ``progress.update``: on the first call it
    is collected now; afterwards it is the one collected during the previous update, with the previous
    weights. Either way, the rollout for the next update starts in the background with ``weights``.
    ``steps_per_update``: agent steps of one update (the next rollout's progress counts them).
    """

    def __init__(self, collector: Collector, steps_per_update: int):
        if len(collector.bufs) < 2:
            raise ValueError("an overlapped collector needs two rollout buffers (Collector(..., buffers=2))")
        self.collector, self.steps_per_update = collector, steps_per_update
        self.num_envs = collector.num_envs
        # torch's thread count is per thread: the collector's own is set to one when it starts.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector",
                                       initializer=torch.set_num_threads, initargs=(1,))
        self.pending: Future[Rollout] | None = None
        # The run's window, fed here with each rollout as it is handed over: the collector's own also holds
        # the episodes of the rollout in flight, so its means would depend on how far that one has got.
        self.window = EpisodeWindow(collector.window.size, collector.window.always)

    def collect(self, weights: dict[str, Any], progress: Progress) -> Rollout:
        """The rollout for this update; the next one starts in the background with ``weights``."""
        rollout = (self.collector.collect(weights, progress) if self.pending is None
                   else self.pending.result())
        following = Progress(progress.update + 1, progress.num_updates, progress.agent_steps + self.steps_per_update)
        self.pending = (self.pool.submit(self.collector.collect, _snapshot(weights), following)
                        if following.update < progress.num_updates else None)
        self.window.add(rollout.episodes)
        return rollout

    def _wait(self) -> None:
        """Let the rollout in flight finish, so that the collector's state is the one after it."""
        if self.pending is not None:
            self.pending.result()

    def record(self) -> dict[str, Any]:
        """Nothing beyond the rollout's own metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The collector's state once the rollout in flight has finished, with this window (a resume
        collects afresh: the finished rollout is not saved)."""
        self._wait()
        return {**self.collector.state_dict(), "episodes": self.window.state_dict()}

    def generators(self) -> dict[str, torch.Generator]:
        """The collector's generators (after the rollout in flight)."""
        self._wait()
        return self.collector.generators()

    def load_state_dict(self, ckpt: dict[str, Any], seed: int) -> None:
        """Restore the collector; the next ``collect`` starts the pipeline again."""
        self._wait()
        self.pending = None
        self.collector.load_state_dict(ckpt, seed)
        self.window.load_state_dict(ckpt["episodes"])

    def close(self) -> None:
        """Wait for the rollout in flight (an error in it is dropped: the run is over), then close the envs."""
        if self.pending is not None:
            self.pending.exception()
            self.pending = None
        self.pool.shutdown(wait=True)
        self.collector.close()
