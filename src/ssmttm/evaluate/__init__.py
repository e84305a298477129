"""Evaluation measures. `signal`: weight-free measures between a reference clip and an estimate (dyncorr, log-mel L1,
DAC mel distance), used by the codec's held-out score and by the benchmarks that compare reconstructions."""
