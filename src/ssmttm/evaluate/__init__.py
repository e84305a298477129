"""The `evaluate` stage: metrics with bootstrap intervals and cards for generated sets against their references (the
audiocraft and stable-audio-metrics families, embeddings, Fréchet distances, weight-free features). The weight-free
signal measures it shares with the codec and the benchmarks live below every stage, in `ssmttm.signal`."""
