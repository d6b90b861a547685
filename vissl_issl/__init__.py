"""vissl_issl: invariant and compressive self-supervised learning for VISSL.

Importing this package imports nothing from VISSL: the losses (:mod:`vissl_issl.losses`), their
maths (:mod:`vissl_issl.maths`) and the trunk architectures (:mod:`vissl_issl.architectures`) are
plain PyTorch. ``import vissl_issl.plugin`` registers the plugin with VISSL.
"""
