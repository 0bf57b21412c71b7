"""`TrainingSpec`: what is trained per step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Spec
from .hardware import Dtype
from .limits import MAX_GLOBAL_BATCH, MAX_SEQ_LEN, Flag, whole_up_to

__all__ = ["TrainingSpec"]


class TrainingSpec(Spec):
    """Global batch (sequences per optimizer step), sequence length, compute dtype and optimizer.
    Mixed precision keeps fp32 master weights and optimizer states (Rajbhandari et al. 2020)."""

    global_batch_size: whole_up_to(MAX_GLOBAL_BATCH, "sequences per step") = Field(gt=0, description="sequences per optimizer step")
    seq_len: whole_up_to(MAX_SEQ_LEN, "tokens per sequence") = Field(gt=0)
    dtype: Dtype = "bf16"
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    grad_dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        default=None, description="gradient storage dtype; None = same as dtype (Megatron default)"
    )
    flash_attention: Flag = True

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len
