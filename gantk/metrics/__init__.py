"""Metrics: distances between image distributions and the feature statistics behind them."""
