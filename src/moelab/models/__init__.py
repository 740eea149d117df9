"""The LLaMA-MoE model family, registered with transformers' Auto classes at import time.

After `import moelab.models`, `AutoConfig` / `AutoModel` / `AutoModelForCausalLM.from_pretrained(dir)` load
a saved LLaMA-MoE checkpoint (model_type "llama_moe") without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .attention_moe import LlamaMoEAttention
from .configuration_llama_moe import (
    GATE_NETWORKS,
    MLP_LAYER_TYPES,
    PER_LAYER_FIELDS,
    ROUTER_TYPES,
    LlamaMoEConfig,
    dense_layer_types,
)
from .experts import MOE_IMPLEMENTATIONS, LlamaMoEExperts
from .export_mixtral import export_mixtral, mixtral_config, mixtral_export_problems
from .import_mixtral import import_mixtral
from .modeling_llama_moe import (
    LlamaMoECausalLMOutputWithPast,
    LlamaMoEDecoderLayer,
    LlamaMoEForCausalLM,
    LlamaMoEModel,
    LlamaMoEModelOutputWithPast,
    LlamaMoEPreTrainedModel,
    LlamaMoESharedExperts,
    LlamaMoESparseBlock,
)
from .routers import (
    FrozenRandomRouter,
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
    "MLP_LAYER_TYPES",
    "MOE_IMPLEMENTATIONS",
    "PER_LAYER_FIELDS",
    "ROUTER_TYPES",
    "FrozenRandomRouter",
    "LlamaMoEAttention",
    "LlamaMoECausalLMOutputWithPast",
    "LlamaMoEConfig",
    "LlamaMoEDecoderLayer",
    "LlamaMoEExperts",
    "LlamaMoEForCausalLM",
    "LlamaMoEModel",
    "LlamaMoEModelOutputWithPast",
    "LlamaMoEPreTrainedModel",
    "LlamaMoESharedExperts",
    "LlamaMoESparseBlock",
    "NoisyTopKRouter",
    "RouterOutput",
    "SoftmaxTopKRouter",
    "SwitchTop1Router",
    "cv_squared",
    "dense_layer_types",
    "export_mixtral",
    "import_mixtral",
    "mixtral_config",
    "mixtral_export_problems",
    "smooth_load",
    "switch_balance_loss",
]
