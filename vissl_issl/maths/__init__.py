"""The maths the losses and heads share, in plain PyTorch (no VISSL import): gathering across
ranks, the columns of a gathered view-major batch and InfoNCE, batch marginals, von Mises-Fisher
densities, whitening, moving averages and the entropy models of the compressors."""
