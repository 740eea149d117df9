"""The LLaMA-MoE model family, registered with transformers' Auto classes at import time.

After `import moelab.models`, `AutoConfig` / `AutoModel` / `AutoModelForCausalLM.from_pretrained(dir)` load
a saved LLaMA-MoE checkpoint (model_type "llama_moe") without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_llama_moe import GATE_NETWORKS, PER_LAYER_FIELDS, ROUTER_TYPES, LlamaMoEConfig
from .experts import MOE_IMPLEMENTATIONS, LlamaMoEExperts
from .modeling_llama_moe import (
    LlamaMoECausalLMOutputWithPast,
    LlamaMoEDecoderLayer,
    LlamaMoEForCausalLM,
    LlamaMoEModel,
    LlamaMoEModelOutputWithPast,
    LlamaMoEPreTrainedModel,
    LlamaMoESparseBlock,
)
from .routers import (
    NoisyTopKRouter,
    RouterOutput,
    SoftmaxTopKRouter,
    SwitchTop1Router,
    cv_squared,
    smooth_load,
    switch_balance_loss,
)

AutoConfig.register(LlamaMoEConfig.model_type, LlamaMoEConfig, exist_ok=True)
AutoModel.register(LlamaMoEConfig, LlamaMoEModel, exist_ok=True)
AutoModelForCausalLM.register(LlamaMoEConfig, LlamaMoEForCausalLM, exist_ok=True)

__all__ = [
    "GATE_NETWORKS",
    "MOE_IMPLEMENTATIONS",
    "PER_LAYER_FIELDS",
    "ROUTER_TYPES",
    "LlamaMoECausalLMOutputWithPast",
    "LlamaMoEConfig",
    "LlamaMoEDecoderLayer",
    "LlamaMoEExperts",
    "LlamaMoEForCausalLM",
    "LlamaMoEModel",
    "LlamaMoEModelOutputWithPast",
    "LlamaMoEPreTrainedModel",
    "LlamaMoESparseBlock",
    "NoisyTopKRouter",
    "RouterOutput",
    "SoftmaxTopKRouter",
    "SwitchTop1Router",
    "cv_squared",
    "smooth_load",
    "switch_balance_loss",
]
