"""Hugging Face `config.json` import (read from disk, never downloaded): dense models (`config`) and
mixtures of experts (`moe`), each config key mapped onto a `ModelSpec` field and every problem reported
under the config's own key."""

from .config import HF_ACTIVATIONS, SUPPORTED_MODEL_TYPES, model_from_hf_config
from .moe import MOE_MODEL_TYPES, mla_attention, moe_model_data

__all__ = ["model_from_hf_config", "HF_ACTIVATIONS", "SUPPORTED_MODEL_TYPES", "MOE_MODEL_TYPES", "moe_model_data",
           "mla_attention"]
