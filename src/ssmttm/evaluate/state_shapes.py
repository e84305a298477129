"""Reading a network's sizes from a checkpoint: the shape of one named tensor of a state dict, or a refusal naming it.
Shared by the loaders that build their network at the checkpoint's sizes (passt_network, clap_network)."""

from __future__ import annotations

from typing import Any


def tensor_shape(state: dict[str, Any], name: str, rank: int, refusal: type[Exception]) -> tuple[int, ...]:
    """The shape of `state[name]`, which must be a tensor of `rank` dimensions; otherwise `refusal` (the loader's
    "not this network" error) saying which tensor and why."""
    tensor = state.get(name)
    if tensor is None or not hasattr(tensor, "shape"):
        raise refusal(f"no tensor {name}")
    if len(tensor.shape) != rank:
        raise refusal(f"{name} has shape {tuple(tensor.shape)}, not {rank}-D")
    return tuple(int(n) for n in tensor.shape)
