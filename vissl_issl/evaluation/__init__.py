"""Evaluation of frozen trunks on cached features.

- :mod:`~vissl_issl.evaluation.features`: one direct forward of a split through the frozen trunk
  into memory-mapped float16 ``<split>_features.npy`` / ``<split>_labels.npy``, with a json sidecar
  that says what produced them, so a re-run reuses a matching cache and recomputes a stale one.
- :mod:`~vissl_issl.evaluation.linear_probe`: the authors' extracted-feature linear probe (SGD, cosine,
  lr x wd grid selected on a held-out part of train, then retrained on all of train), top-1/top-5.
- :mod:`~vissl_issl.evaluation.knn`: cosine k-NN with temperature-weighted votes, several k at once.

All three read the features chunk by chunk, so memory is bounded by the chunk size, not the split
(ImageNet: 1.28M x 8192 features). ``tools/probe.py`` runs them from a plugin checkpoint.
"""
