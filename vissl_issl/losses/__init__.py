"""Registered with VISSL on import."""
from vissl_issl.losses import dissl  # noqa: F401
