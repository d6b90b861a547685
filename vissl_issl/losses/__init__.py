"""Registered with VISSL on import."""
from vissl_issl.losses import asymmetric_simclr, byol, c_byol, c_simclr, cissl, compression, dissl, w_mse  # noqa: F401
