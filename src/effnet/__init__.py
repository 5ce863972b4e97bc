"""effnet: efficient convolutional networks, faithful to the papers and as fast as their FLOPs promise."""

from effnet.model import EfficientConvNet, ModelConfig
from effnet.scaling import compound_coefficients, make_divisible
from effnet.tables import BlockType, NetSpec, Stage
from effnet.zoo import create_model, efficientnet, get_recipe, list_models, model_config

__version__ = "0.1.0"

__all__ = [
    "BlockType",
    "EfficientConvNet",
    "ModelConfig",
    "NetSpec",
    "Stage",
    "compound_coefficients",
    "create_model",
    "efficientnet",
    "get_recipe",
    "list_models",
    "make_divisible",
    "model_config",
]
