"""Peak bytes of live tensor storage in this process, counted op by op (the closed loop's memory check).

The executor's `MemoryTracker` reports the resident-set rise on CPU, which also holds libtorch's pages,
allocator caches and Gloo buffers; the cost model predicts tensor bytes (weights, gradients, optimizer
states, activations, buffers). `TensorBytesTracker` measures the latter in the real run: a
`TorchDispatchMode` sees every tensor an op returns on this thread (forward, backward - the CPU
autograd engine runs in the calling thread - and the optimizer), keeps each distinct storage once, and
drops it when the storage is freed (a weak reference's callback), so `peak_bytes` is the high-water mark
of live tensor bytes. Tensors made before the tracker starts are counted through `seed` (the model's
parameters and buffers). DTensors count their local shard. It costs a Python call per op, so the
training loop runs it during the warm-up step only, which is not timed (the first step allocates the
optimizer states, so its peak is the steady-state peak)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["TensorBytesTracker"]


def _local(t: torch.Tensor) -> torch.Tensor:
    local = getattr(t, "_local_tensor", None)  # DTensor: its shard on this rank
    return local if isinstance(local, torch.Tensor) else t


class TensorBytesTracker(TorchDispatchMode):
    """`with TensorBytesTracker(seed=model.parameters()) as tr: ...`; then `tr.peak_bytes`."""

    def __init__(self, seed: Iterable[Any] = ()) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        for t in seed:
            self.add(t)

    def add(self, t: Any) -> None:
        """Count `t`'s storage once while it lives (non-tensors and meta tensors are ignored)."""
        if not isinstance(t, torch.Tensor):
            return
        t = _local(t)
        if t.device.type == "meta" or type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        try:
            self._refs[key] = weakref.ref(storage, lambda _r, key=key: self._free(key))
        except TypeError:
            return
        self._live[key] = nbytes
        self.current_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _free(self, key: int) -> None:
        self.current_bytes -= self._live.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self.add(t)
        return out
