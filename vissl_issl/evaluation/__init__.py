"""Evaluation of frozen trunks on cached features.

- :mod:`~vissl_issl.evaluation.features`: one direct forward of a split through the frozen trunk
  into memory-mapped float16 ``<split>_features.npy`` / ``<split>_labels.npy``, with a json sidecar
  that says what produced them, so a re-run reuses a matching cache and recomputes a stale one.
- :mod:`~vissl_issl.evaluation.linear_probe`: the authors' extracted-feature probes, linear or MLP
  (SGD, cosine, an lr x wd grid: one point selected on a held-out part of train, every point scored
  on test after training on all of train; the FORK's ImageNet settings or the ISSL TinyImageNet
  ones), top-1/top-5.
- :mod:`~vissl_issl.evaluation.subsets`: stratified, seeded subsets of the train labels, for probes
  on 10%, 1% or 0.2% of them.
- :mod:`~vissl_issl.evaluation.knn`: cosine k-NN with temperature-weighted votes, several k at once.
- :mod:`~vissl_issl.evaluation.protocols`: the authors' protocols by name next to ours (the FORK's
  scikit-learn and random-search torch heads, W-MSE's Adam head and Euclidean 5-NN), each result
  naming its protocol, settings and selected hyper-parameters.

The probe and k-NN read the features chunk by chunk, so memory is bounded by the chunk size, not the
split (ImageNet: 1.28M x 8192 features); the scikit-learn protocols hold the train split in memory.
``tools/probe.py`` runs them from a checkpoint, on one dataset or (``transfer``) on several.
"""
