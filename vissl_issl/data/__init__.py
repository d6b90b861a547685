"""Data in plain PyTorch/PIL (no VISSL import): the embedded digits, STL-10's unlabeled split and
VIC's augmented/canonical collator, in the shapes VISSL's data sources and collators take;
:mod:`vissl_issl.plugin.data` registers them with VISSL."""
