"""Texture Mixer: controllable texture interpolation (thesis ch. 3)."""
