"""Tiny random Qwen2-Audio (the caption model, `caption.model.name_or_path: Qwen/Qwen2-Audio-7B-Instruct`).

PLUMBING ONLY: its captions are gibberish. The processor is the real Qwen2AudioProcessor: a byte-level BPE tokenizer
trained here on two sentences (with Qwen's chat and audio special tokens) and a WhisperFeatureExtractor. The model is
Qwen2AudioForConditionalGeneration from a config with a 2-layer, 32-wide text model and a 1-layer, 16-wide audio
encoder, saved with `save_pretrained` like the release.
"""

from __future__ import annotations

from pathlib import Path

REPO_ID = "Qwen/Qwen2-Audio-7B-Instruct"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]


def build_tiny_qwen2_audio(folder: Path, mel_bins: int = 16, window_s: int = 2, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-Audio (model + processor) into `folder`; return it.

    mel_bins / window_s: the feature extractor's mel bins and window (the real model: 128 bins, 30 s). The audio
    encoder's positions follow the window (100 per second after its stride-2 convolution).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Config,
        WhisperFeatureExtractor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["a calm acoustic piece with piano and strings", "an upbeat electronic track"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    features = WhisperFeatureExtractor(
        feature_size=mel_bins, sampling_rate=16000, hop_length=160, chunk_length=window_s, n_fft=400
    )
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64 * window_s + 512,  # the audio tokens (25 a second) plus the prompt and reply
    )
    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=mel_bins,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        d_model=16,
        max_source_positions=50 * window_s,  # 100 mel frames a second, halved by the encoder's stride-2 convolution
    )
    config = Qwen2AudioConfig(
        audio_config=audio, text_config=text, audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
