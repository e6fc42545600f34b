"""The papers' claims as DVC experiments: Pre-LN vs Post-LN stability, sparse vs dense, k-shot curves, loss prediction."""
