"""Token stages: tokenize (clips -> DAC codes in Parquet shards), the shard format, and the training loader."""
