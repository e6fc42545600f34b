"""Weights and data to findings: perplexity and task scores, the 13-gram contamination audit."""
