"""Registered with VISSL on import."""
from vissl_issl.data import canonical_collator, digits, stl10  # noqa: F401  (register "sklearn_digits", "stl10_unlabeled", "augmented_canonical_collator")
