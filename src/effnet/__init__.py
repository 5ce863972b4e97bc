"""effnet: efficient convolutional networks, faithful to the papers and as fast as their FLOPs promise.

The public names are imported on first use (PEP 562), so the torch-free modules (``effnet.config``,
``effnet.plan``, ``effnet.tables``, ``effnet.errors``, ``effnet.weights.format``, the runtime's numpy
and OpenCL backends) import on a machine without torch.
"""

from __future__ import annotations

from effnet.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "BlockType": "effnet.tables",
    "EfficientConvNet": "effnet.model",
    "ModelConfig": "effnet.config",
    "NetSpec": "effnet.tables",
    "Stage": "effnet.tables",
    "compound_coefficients": "effnet.scaling",
    "convert_state_dict": "effnet.weights",
    "create_model": "effnet.weights",
    "efficientnet": "effnet.zoo",
    "export_onnx": "effnet.export",
    "export_state_dict": "effnet.weights",
    "get_recipe": "effnet.zoo",
    "list_models": "effnet.zoo",
    "load": "effnet.weights",
    "make_divisible": "effnet.scaling",
    "model_config": "effnet.zoo",
    "save": "effnet.weights",
}

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


__getattr__, __dir__ = lazy_exports('effnet', _EXPORTS, __all__, globals())
