"""Probe (linear or MLP), k-NN and the authors' evaluation protocols of a checkpoint's frozen trunk, on
one dataset or several (``transfer``): ``python tools/probe.py --help`` (:mod:`vissl_issl.evaluation.probe`)."""

from vissl_issl.evaluation.probe import main

if __name__ == "__main__":
    main()
