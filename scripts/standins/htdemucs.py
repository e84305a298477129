"""Tiny random Demucs `htdemucs` (vocal removal, `segment.vocal_removal.model: htdemucs`, weights_path null).

demucs' `get_model('htdemucs')` first reads the Hugging Face repository adefossez/HTDemucs: a bag file
`htdemucs.yaml` naming one model signature, and `<sig>.safetensors` holding that model's tensors with its class and
constructor arguments (JSON, fractions encoded as {"_type": "fraction"}) in the safetensors metadata. The stand-in
writes that layout into a Hugging Face cache, with the release's signature and sources, its 44.1 kHz stereo and
7.8 s training segment (the longest window the model accepts), its depth 4 and nfft 4096, and tiny widths (4
channels, one transformer layer; the release: 48 channels, 5 layers).
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.standins.common import canonical_safetensors_header

REPO_ID = "adefossez/HTDemucs"
SIGNATURE = "955717e8"  # the release's (demucs/remote/htdemucs.yaml)
SEGMENT = {"_type": "fraction", "numerator": 39, "denominator": 5}  # 7.8 s, as the release
TINY_KWARGS = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": SEGMENT,
    "channels": 4,
    "depth": 4,
    "nfft": 4096,
    "t_layers": 1,
    "t_heads": 2,
    "dconv_comp": 2,
    "t_hidden_scale": 1.0,
    "norm_starts": 10,
}


def build_tiny_htdemucs(snapshot: Path, seed: int = 0) -> Path:
    """Write htdemucs.yaml and <sig>.safetensors into a snapshot folder of adefossez/HTDemucs; return it."""
    import torch
    import yaml
    from demucs.hf import _decode_json
    from demucs.htdemucs import HTDemucs
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = HTDemucs(**_decode_json(TINY_KWARGS)).eval()
    snapshot = Path(snapshot)
    snapshot.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(TINY_KWARGS)}
    save_file(state, str(snapshot / f"{SIGNATURE}.safetensors"), metadata=metadata)
    canonical_safetensors_header(snapshot / f"{SIGNATURE}.safetensors")
    (snapshot / "htdemucs.yaml").write_text(yaml.safe_dump({"models": [SIGNATURE]}))
    return snapshot
