"""tpSGD: target-projection SGD, layer-local training without back-propagation across layers.

After "Learning with Local Gradients at the Edge" (Lomnitz et al.), generalising DRTP (Frenkel et al.
2021). ``TPSGD(model)`` reads a network as a stack of blocks (an ``nn.Linear`` or one-layer ``nn.GRU``
core with its activations) and trains each hidden block on a local loss against a fixed random
projection of the target. Every block's input is detached, so no autograd graph spans two layers and
activation memory is one block's; the output block gets its ordinary loss.

Design note (local losses, GRU blocks, sign and scale choices): docs/design/tpsgd.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The optimiser of the blocks comes from the library half of the registry (which imports this module).
from optim.library import build

__all__ = ["TPSGD", "Block", "sequential_forward", "split_blocks", "train_readout"]

TASKS = ("classification", "regression")


@dataclass
class Block:
    """One trainable core (Linear or GRU) with the modules before and after it."""

    core: nn.Module
    pre: list[nn.Module] = field(default_factory=list)
    post: list[nn.Module] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Features of the core's output (Linear out_features, GRU hidden_size)."""
        return self.core.out_features if isinstance(self.core, nn.Linear) else self.core.hidden_size

    def parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the core and of the modules around it."""
        for m in (*self.pre, self.core, *self.post):
            yield from m.parameters()


def _check_gru(m: nn.GRU) -> None:
    if m.num_layers != 1 or m.bidirectional or not m.batch_first:
        raise ValueError("tpSGD takes GRU layers with num_layers=1, bidirectional=False, batch_first=True")


def split_blocks(model: nn.Module) -> list[Block]:
    """Read ``model`` (an ``nn.Sequential`` stack, nested ones flattened) as blocks, one per Linear / GRU."""
    modules: list[nn.Module] = []

    def flatten(m: nn.Module) -> None:
        if isinstance(m, nn.Sequential):
            for child in m:
                flatten(child)
        else:
            modules.append(m)

    flatten(model)
    blocks: list[Block] = []
    pending: list[nn.Module] = []
    for m in modules:
        if isinstance(m, nn.Linear | nn.GRU):
            if isinstance(m, nn.GRU):
                _check_gru(m)
            blocks.append(Block(core=m, pre=pending))
            pending = []
        elif blocks:
            blocks[-1].post.append(m)
        else:
            pending.append(m)
    if not blocks:
        raise ValueError("tpSGD needs an nn.Sequential stack with at least one nn.Linear or nn.GRU layer")
    if pending:  # pragma: no cover - cannot happen: modules after the first core go to post
        blocks[-1].post.extend(pending)
    return blocks


def sequential_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run an ``nn.Sequential`` stack that may hold GRU layers (their output sequence is passed on)."""
    for block in split_blocks(model):
        x = _apply(block.pre, x)
        x = block.core(x)[0] if isinstance(block.core, nn.GRU) else block.core(x)
        x = _apply(block.post, x)
    return x


def _apply(mods: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in mods:
        x = m(x)
    return x


class TPSGD:
    """Train an MLP / GRU stack layer by layer against fixed random projections of the targets.

        tp = TPSGD(nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10)), task="classification")
        for x, y in loader:
            tp.step(x, y)          # y: class indices [B] (or [B, T] for sequences)
        logits = tp.forward(x)

    ``task``: ``classification`` (output cross-entropy, targets one-hot-encoded for the projections) or
    ``regression`` (output MSE, targets projected as they are). C, the target width, is the output
    block's width. ``loss_fn(out, y)`` replaces the output loss; ``hidden_loss`` is ``mse``, ``drtp``
    or a callable ``(h, projected_target) -> scalar``. ``optimizer`` is any registry name.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str = "classification",
        hidden_loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "mse",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        projection_scale: float | None = None,
        optimizer: str = "sgd",
        optimizer_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if isinstance(hidden_loss, str) and hidden_loss not in ("mse", "drtp"):
            raise ValueError(f"hidden_loss must be 'mse', 'drtp' or a callable, got {hidden_loss!r}")
        self.model, self.task, self.hidden_loss = model, task, hidden_loss
        self.blocks = split_blocks(model)
        self.num_targets = self.blocks[-1].width
        c = self.num_targets
        default_scale = 1.0 if task == "classification" else (3 / c) ** 0.5
        scale = projection_scale if projection_scale is not None else default_scale
        gen = torch.Generator().manual_seed(seed)
        ref = next(model.parameters())
        # P_k [C, n_k]: fixed, never trained (plain tensors, not parameters).
        self.projections = [
            ((torch.rand(c, b.width, generator=gen) * 2 - 1) * scale).to(ref.device, ref.dtype)
            for b in self.blocks[:-1]
        ]
        self.loss_fn = loss_fn or (_ce if task == "classification" else _mse)
        kwargs = {"lr": 0.05, "momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {}
        kwargs.update(optimizer_kwargs or {})
        self.optimizer = build(optimizer, model.parameters(), **kwargs)

    # -- targets and losses -------------------------------------------------------------------------
    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Target vector per example: one-hot [..., C] for classification, ``y`` itself for regression."""
        if self.task == "classification":
            return F.one_hot(y.long(), self.num_targets).to(self.projections[0].dtype if self.projections else float)
        return y

    def _local_backward(self, h: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        """Backward the local loss of a block output ``h`` into its parameters; returns the loss (detached).

        For the built-in losses the gradient in h is written out (mse: (h - t) / N, drtp: t / N, N the
        number of examples) and passed to ``h.backward``, so the loss itself saves no tensor: the block's
        graph holds only what its own layers save. ``weight`` scales the loss (1 / T per GRU time step).
        """
        if callable(self.hidden_loss):
            loss = self.hidden_loss(h, target) * weight
            loss.backward()
            return loss.detach()
        n = h.numel() // h.shape[-1]
        with torch.no_grad():
            target = target.expand_as(h)
            if self.hidden_loss == "mse":
                diff = h - target
                loss, grad = 0.5 * (diff**2).sum() / n, diff / n
            else:  # drtp
                loss, grad = (h * target).sum() / n, target / n
        h.backward(grad * weight)
        return loss * weight

    # -- training -----------------------------------------------------------------------------------
    def _block_step(
        self, block: Block, x: torch.Tensor, backward_of: Callable[[torch.Tensor, int | None, float], torch.Tensor]
    ) -> tuple[torch.Tensor, float]:
        """Forward one block on a detached input and backward its loss (``backward_of(out, t, weight)``
        does the backward and returns the detached loss); returns (detached output, loss)."""
        x = x.detach()
        if isinstance(block.core, nn.GRU):
            gru = block.core
            x = _apply(block.pre, x)
            h = x.new_zeros(x.shape[0], gru.hidden_size)
            outs, total = [], 0.0
            for t in range(x.shape[1]):
                with torch.enable_grad():
                    h = torch.gru_cell(x[:, t], h.detach(), gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                                       gru.bias_hh_l0)
                    out = _apply(block.post, h)
                    total += float(backward_of(out, t, 1.0 / x.shape[1]))
                h = h.detach()
                outs.append(out.detach())
            return torch.stack(outs, 1), total
        with torch.enable_grad():
            out = _apply(block.post, block.core(_apply(block.pre, x)))
            loss = backward_of(out, None, 1.0)
        return out.detach(), float(loss)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """One tpSGD update on a batch; returns {"loss": output loss, "hidden_losses": [per hidden block]}."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        code = self.encode(targets)
        x = inputs
        hidden: list[float] = []
        for block, proj in zip(self.blocks[:-1], self.projections, strict=True):
            t_full = code @ proj  # [..., n_k]

            def local(h: torch.Tensor, t: int | None, weight: float, t_full: torch.Tensor = t_full) -> torch.Tensor:
                tgt = t_full if t is None or t_full.dim() < 3 else t_full[:, t]
                if h.dim() == 3 and tgt.dim() == 2:  # sequence features, per-sequence target
                    tgt = tgt.unsqueeze(1)
                return self._local_backward(h, tgt, weight)

            x, loss = self._block_step(block, x, local)
            hidden.append(loss)

        def output_loss(out: torch.Tensor, t: int | None, weight: float) -> torch.Tensor:
            y = targets if t is None or targets.dim() < (2 if self.task == "classification" else 3) else targets[:, t]
            loss = self._output_loss(out, y) * weight
            loss.backward()
            return loss.detach()

        _, out_loss = self._block_step(self.blocks[-1], x, output_loss)
        self.optimizer.step()
        return {"loss": out_loss, "hidden_losses": hidden}

    def _output_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Output loss; a sequence output [B, T, C] with per-sequence targets broadcasts them over T."""
        if out.dim() == 3:
            if self.task == "classification":
                y = y.unsqueeze(1).expand(-1, out.shape[1]) if y.dim() == 1 else y
                return self.loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            y = y.unsqueeze(1).expand_as(out) if y.dim() == 2 else y
        return self.loss_fn(out, y)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output (inference, no graph)."""
        self.model.eval()
        return sequential_forward(self.model, inputs)

    __call__ = forward

    def state_dict(self) -> dict[str, Any]:
        """Projections and optimiser state (the model's weights are in ``model.state_dict()``)."""
        return {"projections": self.projections, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.projections = list(state["projections"])
        self.optimizer.load_state_dict(state["optimizer"])


def train_readout(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int = 20,
    batch: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    task: str = "classification",
    optimizer: str = "sgd",
    optimizer_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """The frozen-random-features baseline of tpSGD: train only the output block of ``model``.

    The hidden blocks keep their random initialisation (as in extreme learning machines / random
    features); the output block gets its ordinary loss on their detached outputs, with the optimiser
    and minibatches of ``TPSGD``'s defaults (SGD, Nesterov momentum 0.9; one permutation per epoch
    from ``seed``). What tpSGD adds over this is exactly its training of the hidden blocks against
    the projected targets. Trains ``model`` in place and returns it.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs={epochs} and batch={batch} must be >= 1")
    blocks = split_blocks(model)
    readout, hidden = blocks[-1], blocks[:-1]
    if not isinstance(readout.core, nn.Linear):
        raise ValueError(f"train_readout needs an nn.Linear output layer, got {type(readout.core).__name__}")
    kwargs = {"lr": lr, "momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {"lr": lr}
    kwargs.update(optimizer_kwargs or {})
    opt = build(optimizer, readout.parameters(), **kwargs)  # only the readout: the rest stays as drawn
    loss_fn = _ce if task == "classification" else _mse
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            with torch.no_grad():  # frozen features: no graph through the hidden blocks
                x = inputs[idx]
                for b in hidden:
                    h = _apply(b.pre, x)
                    x = _apply(b.post, b.core(h)[0] if isinstance(b.core, nn.GRU) else b.core(h))
            out = _apply(readout.post, readout.core(_apply(readout.pre, x)))
            opt.zero_grad(set_to_none=True)
            loss_fn(out, targets[idx]).backward()
            opt.step()
    model.eval()
    return model


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y.long())


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y)
