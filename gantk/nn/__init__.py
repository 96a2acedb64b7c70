"""Layers shared by every network in gantk (equalized learning rate, FIR resampling, …)."""
