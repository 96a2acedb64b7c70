"""Attributing images to the model that made them (thesis ch. 4)."""
