"""Documents to a training mixture: the quality classifier and Pareto retention, MinHash dedup, the mix."""
