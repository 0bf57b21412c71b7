"""`TrainingSpec`: what is trained per step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ._base import Spec
from .hardware import Dtype
from .limits import MAX_GLOBAL_BATCH, MAX_SEQ_LEN, Flag, number_in, whole_up_to

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
    stack: str = Field(default="megatron",
                       description="software stack that runs the plan (costmodel/data/stacks): megatron, deepspeed, "
                                   "fsdp, torch-compile, paraplan")
    moe_load_imbalance: number_in("imbalance") = Field(
        default=1.0, ge=1.0, description="tokens the busiest expert-parallel rank receives / the mean "
        "(1 = perfectly balanced routing); mixture-of-experts models only")

    @field_validator("stack")
    @classmethod
    def _known_stack(cls, value: str) -> str:
        from ..stacks import list_stacks, unknown_stack

        if value not in list_stacks():
            raise unknown_stack(value)
        return value

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len
