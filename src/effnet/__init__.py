"""effnet: efficient convolutional networks, faithful to the papers and as fast as their FLOPs promise."""

from effnet.export import export_onnx
from effnet.model import EfficientConvNet, ModelConfig
from effnet.scaling import compound_coefficients, make_divisible
from effnet.tables import BlockType, NetSpec, Stage
from effnet.weights import convert_state_dict, create_model, export_state_dict, load, save
from effnet.zoo import efficientnet, get_recipe, list_models, model_config

__version__ = "0.1.0"

__all__ = [
    "BlockType",
    "EfficientConvNet",
    "ModelConfig",
    "NetSpec",
    "Stage",
    "compound_coefficients",
    "convert_state_dict",
    "create_model",
    "efficientnet",
    "export_onnx",
    "export_state_dict",
    "get_recipe",
    "list_models",
    "load",
    "make_divisible",
    "model_config",
    "save",
]
