"""Tiny random PaSST in the kkoutini/PaSST release format (evaluate.models.passt: kl_passt; passt_10s: kl_passt_sam).

The releases (`passt-s-f128-20sec-p16-s10-ap474-swa.pt`, 20 s; `passt-s-f128-p16-s10-ap.476-swa.pt`, 10 s) are plain
state dicts of hear21passt's PaSST network (768 wide, 12 blocks, 12 heads, 86 M parameters). ssmttm.evaluate.Passt
reads the sizes from the tensors (ssmttm.evaluate.passt_network), so the stand-in is the same network with the same
tensor names, only narrow and shallow: 64 wide, 2 blocks, 1 head, with seeded random weights (hear21passt's own
initialisation). What the loader checks is kept at the real sizes: the 527 AudioSet classes, and the positional
embeddings of the 10 s and 20 s models (12 x 99 and 12 x 200 patches), so a short clip's time crop runs as with the
real files. Written where params point (models/eval/<release name>, relative to the workspace). torch.save names
the archive after the file, so the bytes are the same on every build at the same file name.
"""

from __future__ import annotations

from pathlib import Path

from scripts.standins import common

# pretrained_length_s -> the release file name that params give for it
FILE_NAMES = {20: "passt-s-f128-20sec-p16-s10-ap474-swa.pt", 10: "passt-s-f128-p16-s10-ap.476-swa.pt"}
EMBED_DIM = 64  # one 64-wide attention head (the releases: 768, 12 heads)
DEPTH = 2  # transformer blocks (the releases: 12)


def build_random_passt(path: Path, pretrained_length_s: int, seed: int = 0) -> Path:
    import torch

    from ssmttm.evaluate.embeddings import PASST_ARCHS, PASST_CLASSES
    from ssmttm.evaluate.passt_network import HEAD_WIDTH, PasstArchitecture, build_network, expected_patches

    arch, input_tdim = PASST_ARCHS[pretrained_length_s]
    freq_patches, time_patches = expected_patches(input_tdim)
    architecture = PasstArchitecture(
        embed_dim=EMBED_DIM,
        depth=DEPTH,
        num_heads=EMBED_DIM // HEAD_WIDTH,
        freq_patches=freq_patches,
        time_patches=time_patches,
        n_classes=PASST_CLASSES,
    )
    torch.manual_seed(seed)
    network = build_network(architecture, arch, input_tdim)
    # clone: a saved state dict must not share storages with other tensors (torch.save would write them too)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in network.state_dict().items()}
    return common.save_torch_file(state, path)


def missing_package() -> str | None:
    """Why the stand-in cannot be built here (hear21passt or torchaudio not installed), or None."""
    import importlib.util

    for package in ("hear21passt", "torchaudio"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (`make setup` installs it: scripts/setup_env.sh)"
    return None
