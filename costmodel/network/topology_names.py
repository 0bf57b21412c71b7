"""GPU and server names of a preset topology, computed from their numbers instead of stored: a preset
cluster of 2^20 GPUs holds no per-GPU object until a plan's ranks ask for theirs.

`PresetGpus` is the sequence 'n0/gpu0', 'n0/gpu1', ... (G per server), `PresetServers` 'n0', 'n1', ...,
and `ServerOf` maps GPU numbers (an int or a numpy array) to server numbers (`gpu // G`). Each equals
the tuple / array it stands for (`==`, `index`, `tolist`), so callers see no difference."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["PresetGpus", "PresetServers", "ServerOf"]


class _Numbered(Sequence[str]):
    """An immutable sequence of `count` names, name(i) computed on demand."""

    def __init__(self, count: int) -> None:
        self._count = count

    def name(self, i: int) -> str:
        raise NotImplementedError

    def number(self, name: str) -> int | None:
        """The position of `name`, or None."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return tuple(self.name(j) for j in range(*i.indices(self._count)))
        j = int(i)
        if j < 0:
            j += self._count
        if not 0 <= j < self._count:
            raise IndexError(f"index {i} out of range for {self._count} names")
        return self.name(j)

    def __iter__(self) -> Iterator[str]:
        return (self.name(j) for j in range(self._count))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.number(name) is not None

    def index(self, name: Any, start: int = 0, stop: int | None = None) -> int:
        j = self.number(name) if isinstance(name, str) else None
        if j is None or j < start or (stop is not None and j >= stop):
            raise ValueError(f"{name!r} is not in the sequence")
        return j

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Numbered):
            return type(other) is type(self) and other._key() == self._key()
        if isinstance(other, tuple):
            return len(other) == self._count and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self._count,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}' for k in self._key())})"


def _digits(text: str) -> int | None:
    return int(text) if text.isdigit() and (text == "0" or not text.startswith("0")) else None


class PresetServers(_Numbered):
    """'n0', 'n1', ... 'n{S-1}'."""

    def name(self, i: int) -> str:
        return f"n{i}"

    def number(self, name: str) -> int | None:
        j = _digits(name[1:]) if name.startswith("n") else None
        return j if j is not None and j < self._count else None


class PresetGpus(_Numbered):
    """'n{i // G}/gpu{i % G}' for GPU i of `servers` servers of `gpus_per_node` GPUs."""

    def __init__(self, servers: int, gpus_per_node: int) -> None:
        super().__init__(servers * gpus_per_node)
        self._g = gpus_per_node

    def name(self, i: int) -> str:
        return f"n{i // self._g}/gpu{i % self._g}"

    def number(self, name: str) -> int | None:
        server, _, local = name.partition("/gpu")
        s = _digits(server[1:]) if server.startswith("n") else None
        j = _digits(local)
        if s is None or j is None or j >= self._g:
            return None
        i = s * self._g + j
        return i if i < self._count else None

    def _key(self) -> tuple:
        return (self._count // self._g, self._g)


class ServerOf:
    """Server number of each GPU (`gpu // gpus_per_node`), indexed like the array it stands for."""

    def __init__(self, num_gpus: int, gpus_per_node: int) -> None:
        self._n, self._g = num_gpus, gpus_per_node

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, gpu: Any) -> Any:
        out = np.asarray(gpu, dtype=np.int64)
        if out.size and (out.min() < 0 or out.max() >= self._n):
            raise IndexError(f"GPU numbers must lie in [0, {self._n})")
        out = out // self._g
        return int(out) if out.ndim == 0 else out

    def tolist(self) -> list[int]:
        return (np.arange(self._n, dtype=np.int64) // self._g).tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return (np.arange(self._n, dtype=np.int64) // self._g).astype(dtype or np.int64)
