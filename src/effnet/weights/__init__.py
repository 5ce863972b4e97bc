"""Pretrained weights: torchvision/timm interop, the effnet file format, published-checkpoint downloads.

- :func:`convert_state_dict` / :func:`export_state_dict`: exact renames to and from torchvision and
  timm, for the architectures in :data:`PEERS` (with the settings each needs, :func:`peer_arch`).
- :func:`save` / :func:`load` / :func:`load_checkpoint`: the one effnet file format (safetensors with
  a versioned metadata schema, :mod:`effnet.weights.format`, readable without torch).
- :func:`create_pretrained` (``create_model(name, weights=...)``): a local file or a published
  checkpoint (:func:`list_published`) fetched through the PyTorch hub cache.

Names are imported on first use (PEP 562): ``import effnet.weights.format`` needs no torch.
"""

from __future__ import annotations

from effnet.lazy import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    "PEERS": "effnet.weights.convert",
    "PUBLISHED": "effnet.weights.hub",
    "CheckpointError": "effnet.errors",
    "Metadata": "effnet.weights.format",
    "Normalization": "effnet.weights.format",
    "PeerArch": "effnet.weights.convert",
    "Pretrained": "effnet.weights.hub",
    "Published": "effnet.weights.hub",
    "adapt_stem_weight": "effnet.weights.adapt",
    "convert_state_dict": "effnet.weights.convert",
    "create_model": "effnet.weights.hub",
    "create_pretrained": "effnet.weights.hub",
    "export_peer": "effnet.weights.convert",
    "export_state_dict": "effnet.weights.convert",
    "fetch": "effnet.weights.hub",
    "key_map": "effnet.weights.convert",
    "list_published": "effnet.weights.hub",
    "load": "effnet.weights.checkpoints",
    "load_checkpoint": "effnet.weights.checkpoints",
    "load_pretrained": "effnet.weights.hub",
    "peer_arch": "effnet.weights.convert",
    "read_checkpoint": "effnet.weights.checkpoints",
    "read_metadata": "effnet.weights.format",
    "read_weights": "effnet.weights.checkpoints",
    "resolve_published": "effnet.weights.hub",
    "save": "effnet.weights.checkpoints",
    "source_config": "effnet.weights.convert",
}

__all__ = [
    "PEERS",
    "PUBLISHED",
    "CheckpointError",
    "Metadata",
    "Normalization",
    "PeerArch",
    "Pretrained",
    "Published",
    "adapt_stem_weight",
    "convert_state_dict",
    "create_model",
    "create_pretrained",
    "export_peer",
    "export_state_dict",
    "fetch",
    "key_map",
    "list_published",
    "load",
    "load_checkpoint",
    "load_pretrained",
    "peer_arch",
    "read_checkpoint",
    "read_metadata",
    "read_weights",
    "resolve_published",
    "save",
    "source_config",
]


__getattr__, __dir__ = lazy_exports('effnet.weights', _EXPORTS, __all__, globals())
