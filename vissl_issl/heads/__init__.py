"""Registered with VISSL on import."""
from vissl_issl.heads import residual_mlp  # noqa: F401  (registers "residual_mlp")
