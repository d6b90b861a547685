"""Registered with VISSL on import."""
from vissl_issl.heads import jl_mlp, residual_mlp  # noqa: F401  (register "jl_mlp", "residual_mlp")
