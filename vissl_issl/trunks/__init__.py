"""Registered with VISSL on import."""
