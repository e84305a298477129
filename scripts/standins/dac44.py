"""Tiny random DAC 44 kHz in descript's release format (the pretrained codec, `codec.mode: pretrained`).

The release (weights 0.0.1, 8 kbps) is a `.pth` written by audiotools' `BaseModel.save(package=False)`:
{"state_dict", "metadata": {"kwargs"}}. The stand-in keeps everything the pipeline depends on (44.1 kHz, hop 512 =
2 x 4 x 8 x 8, 9 codebooks x 1024 codes of 8 dims, so 72 latent channels for the refiner) and shrinks the widths
(encoder_dim 2 instead of 64, decoder_dim 32 instead of 1536). With `codec.pretrained.path: null` the loader reads
`~/.cache/descript/dac/weights_44khz_8kbps_0.0.1.pth`, so the file goes under HOME/.cache/descript/dac/.
"""

from __future__ import annotations

from pathlib import Path

CACHE_SUBDIR = Path(".cache/descript/dac")
FILE_NAME = "weights_44khz_8kbps_0.0.1.pth"
TINY_44KHZ_KWARGS = {
    "encoder_dim": 2,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": None,  # encoder_dim * 2 ** 4 = 32, as DAC computes it
    "decoder_dim": 32,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 44100,
}


def build_tiny_dac44(folder: Path, seed: int = 0) -> Path:
    """Write the tiny DAC to `folder`/weights_44khz_8kbps_0.0.1.pth (folder: HOME/.cache/descript/dac); return it."""
    import torch

    from ssmttm.codec import build_dac

    torch.manual_seed(seed)
    model = build_dac(TINY_44KHZ_KWARGS).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    model.save(str(tmp), package=False)
    tmp.replace(path)
    return path
