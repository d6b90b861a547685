"""Probe (linear or MLP) and k-NN of a checkpoint's frozen trunk: ``python tools/probe.py --help``
(:mod:`vissl_issl.evaluation.probe`)."""

from vissl_issl.evaluation.probe import main

if __name__ == "__main__":
    main()
