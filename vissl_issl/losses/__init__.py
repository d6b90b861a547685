"""Registered with VISSL on import."""
from vissl_issl.losses import asymmetric_simclr, cissl, dissl  # noqa: F401
