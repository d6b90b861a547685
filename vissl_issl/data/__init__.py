"""Data in plain PyTorch/PIL (no VISSL import): the embedded digits, STL-10's unlabeled split,
VIC's augmented/canonical collator and the ISSL experiments' views, in the shapes VISSL's data
sources, collators and transforms take;
:mod:`vissl_issl.plugin.data` registers them with VISSL."""
