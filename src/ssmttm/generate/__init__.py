"""Generation: captions -> LM codebook-1 tokens -> refiner -> codec -> WAV (the `generate` stage).

config.py       params `generate` (GenerateConfig), the variants and caption sets
tokens.py       recurrent token sampling with classifier-free guidance, per-caption seeds, codes files
captions.py     caption sets with stable ids (test split of the shards, MusicCaps, .txt / .jsonl)
checkpoints.py  the kept checkpoints of a train-lm run
synth.py        codes -> audio: the refiner glue and the codec
audio_out.py    clip checks, WAV writing and the resumable per-folder manifest
memory.py       will LM sampling fit in memory (checked before sampling)
references.py   the reference clips of the caption set (generate_reference)
baseline.py     the MusicGen baseline (generate_baseline)
lm_run.py       one LM run's checkpoints -> the variants' WAVs
stage.py        `ssmttm generate` (LM runs, references, ad-hoc codes)
fetch_references.py  `ssmttm fetch-references`: the caption set's reference audio (MusicCaps: 10 s from start_s)
decode.py       `ssmttm decode`: codes or latents -> WAVs with a codec folder
"""

from ssmttm.generate.captions import read_captions
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.tokens import caption_seed, generate_tokens, sample_next, write_codes

__all__ = ["GenerateConfig", "caption_seed", "generate_tokens", "read_captions", "sample_next", "write_codes"]
