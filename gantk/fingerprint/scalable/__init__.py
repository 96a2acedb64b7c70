"""Scalable per-user fingerprints of generators (Yu et al., ICLR 2022): networks, trainer,
minted instances, the secret registry and evaluation, in one package."""
