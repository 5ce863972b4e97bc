"""Pretrained weights: torchvision/timm interop, safe checkpoints, published-checkpoint downloads.

- :func:`convert_state_dict` / :func:`export_state_dict`: exact renames to and from torchvision and
  timm, for the architectures in :data:`PEERS` (with the settings each needs, :func:`peer_arch`).
- :func:`save` / :func:`load`: safetensors with the model name and config in the metadata.
- :func:`create_pretrained` (``create_model(name, weights=...)``): a local file or a published
  checkpoint (:func:`list_published`) fetched through the PyTorch hub cache.
"""

from effnet.weights.adapt import adapt_stem_weight
from effnet.weights.checkpoints import load, read_checkpoint, save
from effnet.weights.convert import (
    PEERS,
    CheckpointError,
    PeerArch,
    convert_state_dict,
    export_peer,
    export_state_dict,
    key_map,
    peer_arch,
    source_config,
)
from effnet.weights.hub import (
    PUBLISHED,
    Pretrained,
    Published,
    create_model,
    create_pretrained,
    fetch,
    list_published,
    load_pretrained,
    resolve_published,
)

__all__ = [
    "PEERS",
    "PUBLISHED",
    "CheckpointError",
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
    "load_pretrained",
    "peer_arch",
    "read_checkpoint",
    "resolve_published",
    "save",
    "source_config",
]
