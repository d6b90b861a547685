"""Registered with VISSL on import."""
from vissl_issl.trunks import resnet  # noqa: F401  (registers "tv_resnet" and "resnet_resizer")
