"""Embeddings: pooling a prompt's hidden states into one vector, the sentence-transformers folder layout, outputs."""
