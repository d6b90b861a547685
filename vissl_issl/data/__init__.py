"""Registered with VISSL on import."""
from vissl_issl.data import digits  # noqa: F401  (registers the "sklearn_digits" source)
