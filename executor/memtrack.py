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
optimizer states, so its peak is the steady-state peak).

FSDP2 frees an unsharded parameter by resizing its storage to 0 bytes and gathers it again into the same
storage (`storage.resize_`, which no dispatch mode sees): a storage's size is therefore re-read whenever an op
returns it, every storage is re-read every `RESCAN_OPS` ops, and one seen to change size is re-read after
every op from then on, so freed unsharded parameters stop counting as live."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["TensorBytesTracker", "RESCAN_OPS", "SteadyStepProbe"]

RESCAN_OPS = 32
"""Ops between two re-reads of every live storage's size (finds storages resized outside dispatch)."""


def _local(t: torch.Tensor) -> torch.Tensor:
    local = getattr(t, "_local_tensor", None)  # DTensor: its shard on this rank
    return local if isinstance(local, torch.Tensor) else t


class TensorBytesTracker(TorchDispatchMode):
    """`with TensorBytesTracker(seed=model.parameters()) as tr: ...`; then `tr.peak_bytes`."""

    def __init__(self, seed: Iterable[Any] = ()) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._resizable: set[int] = set()   # storages seen to change size (FSDP2's unsharded parameters)
        self._ops = 0
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
            self._resize(key, storage)
            return
        nbytes = storage.nbytes()
        try:
            self._refs[key] = weakref.ref(storage, lambda _r, key=key: self._free(key))
        except TypeError:
            return
        self._live[key] = nbytes
        self.current_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _resize(self, key: int, storage: Any) -> None:
        """Re-read a live storage's size (resized in place since it was counted)."""
        nbytes = storage.nbytes()
        old = self._live[key]
        if nbytes != old:
            self._resizable.add(key)
            self._live[key] = nbytes
            self.current_bytes += nbytes - old
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _rescan(self, keys: Iterable[int]) -> None:
        for key in list(keys):
            ref = self._refs.get(key)
            storage = ref() if ref is not None else None
            if storage is not None:
                self._resize(key, storage)

    def _free(self, key: int) -> None:
        self.current_bytes -= self._live.pop(key, 0)
        self._refs.pop(key, None)
        self._resizable.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self._ops += 1
        self._rescan(self._live if self._ops % RESCAN_OPS == 0 else self._resizable)   # frees by resize_(0)
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self.add(t)
        return out


def _state_bytes(optimizer: Any) -> int:
    """Bytes of the optimizer's state tensors on this rank (a ZeroRedundancyOptimizer's local optimizer's)."""
    local = getattr(optimizer, "optim", optimizer)
    return sum(_local(v).untyped_storage().nbytes() for state in local.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


class SteadyStepProbe:
    """The peak a steady-state step reaches, measured in the first one (`with SteadyStepProbe(tracker, opt)`).

    The first step allocates the optimizer's states inside its optimizer step, so its forward and backward
    ran without them; every later step's forward holds them. The probe notes the tracker's peak when the
    optimizer step starts (forward + backward) and the state bytes that step adds:
    steady peak = max(the step's peak, forward/backward peak + new state bytes)."""

    def __init__(self, tracker: TensorBytesTracker, optimizer: Any) -> None:
        self.tracker, self.optimizer = tracker, optimizer
        self.before_optimizer_bytes = 0
        self.new_state_bytes = 0
        self._handles: list[Any] = []
        self._states_before = 0

    def _pre(self, *_: Any) -> None:
        self.before_optimizer_bytes = self.tracker.peak_bytes
        self._states_before = _state_bytes(self.optimizer)

    def _post(self, *_: Any) -> None:
        self.new_state_bytes = max(0, _state_bytes(self.optimizer) - self._states_before)

    def __enter__(self) -> SteadyStepProbe:
        self._handles = [self.optimizer.register_step_pre_hook(self._pre),
                         self.optimizer.register_step_post_hook(self._post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()

    @property
    def peak_bytes(self) -> int:
        return max(self.tracker.peak_bytes, self.before_optimizer_bytes + self.new_state_bytes)
