"""Data: captions, video decoding, synthetic datasets, text corpora and tokenisation, input sources."""
