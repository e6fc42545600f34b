"""Mixture to weights: byte-level BPE, token shards, the GPT model, training, export."""
