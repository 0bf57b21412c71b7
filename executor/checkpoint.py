"""Distributed checkpoints with `torch.distributed.checkpoint` (DCP), written atomically and resumable on
the same or a different plan.

Layout: `<run>/checkpoints/step-00000005/` holds DCP's shards and `.metadata` plus `trainer_state.json`
(step, schedule, seed, per-rank RNG). Every rank writes into `.tmp-step-...`; rank 0 renames it only after
DCP has finished, so a run killed mid-write leaves the previous checkpoint as the latest one.

Model and optimizer states go through `get_state_dict`/`set_state_dict`, which name every tensor by its
fully qualified parameter name (FQN) and keep DTensor shardings; DCP then reshards on load, so a dp2
checkpoint loads into a tp2 or pp2 run. Optimizer states are flattened per FQN (as torchtitan does) so
pipeline ranks holding different layers never collide on one key.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.optim import ZeroRedundancyOptimizer

from .metrics import write_json_atomic

__all__ = [
    "CHECKPOINT_DIRNAME", "TRAINER_STATE_FILE", "merged_model_view", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "resolve_checkpoint", "read_trainer_state", "capture_rng", "restore_rng",
]

CHECKPOINT_DIRNAME = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
_REQUIRED_KEYS = ("step", "seed", "plan", "world_size")


def merged_model_view(model_parts: list[nn.Module]) -> nn.Module:
    """One module whose parameter names are those of the whole model, over this rank's `model_parts`
    (pipeline chunks keep the full model's names; their `layers` ModuleDicts are merged)."""
    if len(model_parts) == 1:
        return model_parts[0]
    view = nn.Module()
    for part in model_parts:
        if next(part.parameters(recurse=False), None) is not None:
            raise ValueError("a model part holds parameters outside its submodules; cannot merge parts")
        for name, child in part.named_children():
            have = view._modules.get(name)
            if have is None:
                view.add_module(name, child)
            elif isinstance(have, nn.ModuleDict) and isinstance(child, nn.ModuleDict):
                merged = nn.ModuleDict(dict(have.items()))
                for key, mod in child.items():
                    if key in merged:
                        raise ValueError(f"model parts both hold {name}.{key}")
                    merged[key] = mod
                view._modules[name] = merged
            elif have is not child:
                raise ValueError(f"model parts both hold submodule {name!r}")
    return view


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The optimizers whose states to save. ZeRO-1's ZeroRedundancyOptimizer contributes its local
    optimizer: each rank saves (and loads) the states of the parameters it owns, by FQN, so ZeRO-1
    checkpoints reshard like any other."""
    out = []
    for opt in optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]:
        out.append(opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt)
    return out


def capture_rng() -> str:
    """This process's torch RNG state(s), base64 encoded (CPU, plus the current CUDA device if any)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return base64.b64encode(json.dumps({k: v.tolist() for k, v in states.items()}).encode()).decode()


def restore_rng(blob: str) -> None:
    states = json.loads(base64.b64decode(blob))
    torch.set_rng_state(torch.tensor(states["cpu"], dtype=torch.uint8))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8))


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(model_parts: list[nn.Module], optimizer: Any, *, root: str | os.PathLike[str], step: int,
                    trainer_state: dict[str, Any], keep: int = 2,
                    before_commit: Callable[[], None] | None = None) -> Path:
    """Collective: save model + optimizer + `trainer_state` as `root/step-<step>`; keep the newest `keep`.
    `before_commit` runs after the shards are written and before the rename (a test hook)."""
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # leftovers of a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    view = merged_model_view(model_parts)
    model_sd, optim_sd = get_state_dict(view, _optimizers(optimizer), options=_OPTIONS)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    rng = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(rng, capture_rng())
    else:
        rng[0] = capture_rng()
    if before_commit is not None:
        before_commit()
    if _rank() == 0:
        write_json_atomic(tmp / TRAINER_STATE_FILE, {**trainer_state, "step": step, "rng": rng})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in _step_dirs(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _step_dirs(root: Path) -> list[Path]:
    dirs = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)] if root.is_dir() else []
    return sorted(dirs, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under `root` (a run directory or its checkpoints/), or None."""
    root = Path(root)
    if (root / CHECKPOINT_DIRNAME).is_dir():
        root = root / CHECKPOINT_DIRNAME
    for path in reversed(_step_dirs(root)):
        if (path / TRAINER_STATE_FILE).is_file() and (path / ".metadata").is_file():
            return path
    return None


def read_trainer_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The trainer state of checkpoint `path`; ValueError naming the file when missing or corrupt."""
    file = Path(path) / TRAINER_STATE_FILE
    try:
        state = json.loads(file.read_text())
    except FileNotFoundError:
        raise ValueError(f"checkpoint {str(path)!r} has no {TRAINER_STATE_FILE}; it is not a complete "
                         "paraplan checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint file {str(file)!r} is corrupt: {exc}") from None
    missing = [k for k in _REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"checkpoint file {str(file)!r} is corrupt: missing {', '.join(missing)}")
    return state


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a run directory, its checkpoints/ or a step directory; checks that it
    is complete and readable (ValueError naming the path and the problem otherwise)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"resume: checkpoint path {str(path)!r} does not exist")
    if not _STEP_DIR.match(path.name):
        found = latest_checkpoint(path)
        if found is None:
            raise ValueError(f"resume: no complete checkpoint under {str(path)!r} "
                             f"(expected {CHECKPOINT_DIRNAME}/step-N/ with .metadata and {TRAINER_STATE_FILE})")
        path = found
    read_trainer_state(path)
    try:
        dcp.FileSystemReader(str(path)).read_metadata()
    except Exception as exc:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint
        raise ValueError(f"resume: checkpoint {str(path)!r} is corrupt (.metadata unreadable: "
                         f"{type(exc).__name__}: {exc})") from None
    return path


def load_checkpoint(model_parts: list[nn.Module], optimizer: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Collective: load checkpoint `path` into this rank's model parts and optimizer (resharding to the
    current plan as needed); restore this rank's RNG; return the trainer state."""
    state = read_trainer_state(path)
    view = merged_model_view(model_parts)
    optimizers = _optimizers(optimizer)
    model_sd, optim_sd = get_state_dict(view, optimizers, options=_OPTIONS)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=str(path))
    set_state_dict(view, optimizers, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"],
                   options=_OPTIONS)
    rng = state.get("rng") or []
    if rng:
        restore_rng(rng[_rank() % len(rng)])
    return state
