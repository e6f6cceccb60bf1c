"""Video data: shards on disk (schema), sampling, decoding and augmentation (pure code), the
converters behind `vidtempo prepare`, the synthetic temporal dataset, and pipeline.py, the one
module that uses Ray Data."""
