"""Pretrained weights: torchvision/timm interop, safe checkpoints, published-checkpoint downloads."""

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

__all__ = [
    "PEERS",
    "CheckpointError",
    "PeerArch",
    "convert_state_dict",
    "export_peer",
    "export_state_dict",
    "key_map",
    "peer_arch",
    "source_config",
]
