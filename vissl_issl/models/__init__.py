"""Registered with VISSL on import."""
from vissl_issl.models import heads_on_crops  # noqa: F401
