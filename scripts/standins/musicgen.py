"""Stand-in for facebook/musicgen-small: a tiny RANDOM MusicGen with a real MusicgenProcessor, built offline.

PLUMBING ONLY: its audio is noise. It has the layout of the real checkpoint (MusicgenForConditionalGeneration: a T5
text encoder, an EnCodec audio encoder at 50 frames/s, a 4-codebook decoder with the delay pattern; a T5Tokenizer and
an EncodecFeatureExtractor), so `ssmttm generate --baseline` runs on it end to end. Used by the tests and by the
paper test profile, never by the pipeline itself:

    .venv/bin/python scripts/standins/musicgen.py models/tiny-musicgen    # then name_or_path: models/tiny-musicgen
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

REPO_ID = "facebook/musicgen-small"  # what this stands in for (scripts/standins/make_all.py puts it in the HF cache)
WORDS = "a an the calm dark epic piano with and strings upbeat electronic track piece guitar drums slow fast bpm"
SAMPLE_RATE = 8000  # real: 32000
UPSAMPLING = [8, 5, 4]  # hop 160 samples: 50 frames/s like the real model (which has hop 640 at 32 kHz)
N_CODEBOOKS = 4  # as the real model
CODEBOOK_SIZE = 64  # real: 2048


def save_tiny_musicgen(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random MusicGen and its processor into `folder` (save_pretrained); returns the folder."""
    import torch
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
        T5Tokenizer,
    )
    from transformers.utils import logging as hf_logging

    # a Unigram vocabulary of characters and a few whole words: every caption tokenizes, with readable pieces
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ",.-'"]
    vocab += [("\u2581" + word, -1.0) for word in WORDS.split()]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE)
    processor = MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer)
    text = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8,
    )  # fmt: skip
    audio = EncodecConfig(
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=UPSAMPLING,
        hidden_size=8,
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=8,
        num_lstm_layers=1,
        target_bandwidths=[1.2],  # 4 codebooks x 6 bits x 50 frames/s (the real 2.2 kbps: 4 x 11 bits x 50)
        use_causal_conv=True,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE,
        num_codebooks=N_CODEBOOKS,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        max_position_embeddings=1024,
        pad_token_id=CODEBOOK_SIZE,  # the special id just above the codes, as the real model's 2048
        bos_token_id=CODEBOOK_SIZE,
        decoder_start_token_id=CODEBOOK_SIZE,
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the real checkpoint's special id is outside the vocabulary too: no warning
    try:
        config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MusicgenForConditionalGeneration(config)
            for layer in model.audio_encoder.quantizer.layers:  # EnCodec's codebooks start as zeros: codes would
                layer.codebook.embed.normal_()  # all decode alike; random vectors make the audio follow the codes
        # the real checkpoint's generation recipe (generation_config.json of facebook/musicgen-small)
        model.generation_config.update(do_sample=True, guidance_scale=3.0, top_k=250, max_length=1500)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/standins/musicgen.py OUT_FOLDER")
    print(save_tiny_musicgen(sys.argv[1]))
