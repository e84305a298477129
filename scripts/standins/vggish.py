"""Random VGGish in the torch port's state-dict format (`evaluate.models.vggish`, metric fd_vggish).

The torch port's release (harritaylor/torchvggish, `vggish-10086976.pth`) is a plain state dict of the VGGish network
(features.* convolutions, embeddings.* fully connected layers). The stand-in is the project's own
`ssmttm.evaluate.embeddings.vggish_network` at its real size (about 72 M parameters: the layer sizes are fixed by
the 96 x 64 input and the 128-d output) with seeded random weights, written where params point
(`models/eval/vggish-10086976.pth`, relative to the workspace).
"""

from __future__ import annotations

from pathlib import Path

from scripts.standins import common

FILE_NAME = "vggish-10086976.pth"


def build_random_vggish(path: Path, seed: int = 0) -> Path:
    import torch

    from ssmttm.evaluate.embeddings import vggish_network

    torch.manual_seed(seed)
    state = vggish_network().state_dict()
    return common.save_torch_file(state, path)
