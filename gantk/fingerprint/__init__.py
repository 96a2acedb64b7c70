"""Fingerprints: steganographic fingerprints in training data (artificial fingerprints)."""
