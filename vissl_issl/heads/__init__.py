"""Registered with VISSL on import."""
from vissl_issl.heads import jl_mlp, residual_mlp, stochastic_predictor  # noqa: F401  (registration)
