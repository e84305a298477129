"""LM training (the `train_lm` stage): Lightning module, resumable checkpoints, text cache, schedule, FLOPs, plots.

config.py      TrainConfig, the `train_lm` params section
schedule.py    warm-up + cosine per optimizer step
data.py        endless, exactly resumable micro-batch stream per rank over ssmttm.tokens.loader
text_cache.py  `ssmttm text-cache`: frozen text-encoder outputs cached per caption
module.py      the LightningModule (loss, AdamW, seeded micro-batches)
recorder.py    the callback writing history.jsonl, timing.jsonl, dvclive, validation, checkpoints, metrics.json
checkpoint.py  step-NNNNNNN/ folders as a Lightning CheckpointIO plugin, pruning, RNG states
flops.py       6 N D accounting and MFU
stage.py       `ssmttm train-lm` and the plain function train_lm(); run keys, previous/ runs
plots.py       `ssmttm lm-plot`: loss against steps and against FLOPs, final losses and loss CSVs of several runs
"""
