"""Native Phi-3.5-vision for transformers 5: the published folder loads without its remote code."""

from reward.backbones.phi3v.config import Phi3VConfig, phi3v_config_from_dict
from reward.backbones.phi3v.image_processing import Phi3VImageProcessor
from reward.backbones.phi3v.loading import build_processor, load_phi3v, read_preprocessor_config
from reward.backbones.phi3v.modeling import Phi3VForCausalLM, Phi3VImageEmbedding, Phi3VModel
from reward.backbones.phi3v.processing import Phi3VProcessor

__all__ = [
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VImageEmbedding",
    "Phi3VImageProcessor",
    "Phi3VModel",
    "Phi3VProcessor",
    "build_processor",
    "load_phi3v",
    "phi3v_config_from_dict",
    "read_preprocessor_config",
]
