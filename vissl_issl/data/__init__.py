"""Registered with VISSL on import."""
from vissl_issl.data import digits, stl10  # noqa: F401  (register "sklearn_digits", "stl10_unlabeled")
