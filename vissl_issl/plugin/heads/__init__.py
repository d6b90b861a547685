"""Registered with VISSL on import."""

from vissl_issl.plugin.heads import (  # noqa: F401  (registration)
    bince_projection,
    entropy_bottleneck,
    image_decoder,
    jl_mlp,
    residual_mlp,
    stochastic_predictor,
)
