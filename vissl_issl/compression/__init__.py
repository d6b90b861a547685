"""Entropy-coded representations on disk and their baselines.

- :mod:`vissl_issl.compression.bitstream`: the ``.bin`` container of per-image entropy-coded records;
- :mod:`vissl_issl.compression.classical`: JPEG / PNG / WebP through Pillow, bits per image;
- :mod:`vissl_issl.compression.bottleneck`: find a model's entropy-bottleneck head and run it over a dataset;
- :mod:`vissl_issl.compression.image_arrays`: dataset splits as uint8 pixel arrays and back (codec input/output);
- :mod:`vissl_issl.compression.matched_accuracy`: the cheapest classical rate that reaches a target accuracy.

Three different "bits per image" exist (see the spec, A.6): the *estimated* rate -log2 q(z_hat) of
the learned prior, the *payload* rate 8 * len(record) of the range coder, and the *file* rate
8 * file size / N, which adds the container's header and per-record lengths. Reports name which one
they give.
"""
