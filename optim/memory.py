"""Peak activation memory of autograd, measured with saved-tensor hooks.

torch has no allocator statistics for CPU tensors, and Python's tracemalloc does not see torch's
allocations, so the honest CPU-side measure of "memory a training method needs for backward" is the
set of tensors autograd saves for it. ``SavedTensorMeter`` counts, while active, the bytes of the
storages held by saved tensors, from the moment autograd saves them until their graph is freed, and
keeps the peak. Storages are counted once however many graph nodes save them (a view counts its whole
storage); storages of the excluded tensors (pass the model's parameters: they exist whatever the
method) are not counted. Gradients, optimiser state and non-saved temporaries are outside this measure.

Hand-written: a dozen lines over ``torch.autograd.graph.saved_tensors_hooks``; nothing ships it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch

__all__ = ["SavedTensorMeter"]


class _Handle:
    __slots__ = ("key", "meter", "tensor")

    def __init__(self, meter: SavedTensorMeter, key: int, tensor: torch.Tensor) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager: ``peak_bytes`` of tensors saved for backward while it is active.

        with SavedTensorMeter(exclude=model.parameters()) as meter:
            loss = model(x).sum(); loss.backward()
        meter.peak_bytes, meter.current_bytes   # current is 0 once every graph is freed
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.saved_count = 0
        self._ctx: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, t: torch.Tensor) -> object:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._excluded or storage.nbytes() == 0:
            return t
        self.saved_count += 1
        if self._refs.get(key, 0) == 0:
            self._sizes[key] = storage.nbytes()
            self.current_bytes += self._sizes[key]
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        self._refs[key] = self._refs.get(key, 0) + 1
        return _Handle(self, key, t)

    @staticmethod
    def _unpack(packed: object) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Handle) else packed  # type: ignore[return-value]

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current_bytes -= self._sizes.pop(key)
            del self._refs[key]

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._ctx is not None
        self._ctx.__exit__(exc_type, exc, tb)
        self._ctx = None
