"""Machine learning for Tributa: tokenizer, demo generation models, embeddings."""
