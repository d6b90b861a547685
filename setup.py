"""vissl_issl: invariant and compressive self-supervised learning as a VISSL plugin.

Install through ``tools/env.sh`` (it lifts VISSL 0.1.6's stale pins with
``requirements/vissl-overrides.txt``). The repo's ``configs/`` folder ships as the package data
``vissl_issl.hydra_configs`` so that ``config=pretrain/...`` resolves from any directory.
"""

from setuptools import find_packages, setup

setup(
    name="vissl_issl",
    version="0.1.0",
    description="DISSL, CISSL, compressors and W-MSE for VISSL",
    python_requires=">=3.11",
    packages=find_packages(include=["vissl_issl", "vissl_issl.*"])
    + ["hydra_plugins.vissl_issl_plugin", "vissl_issl.hydra_configs"],
    package_dir={"vissl_issl.hydra_configs": "configs"},
    package_data={"vissl_issl.hydra_configs": ["config/**/*.yaml"]},
    install_requires=[
        "vissl==0.1.6",
        # VISSL imports pkg_resources (and its test suite uses it) without declaring it;
        # setuptools 81 dropped pkg_resources.
        "setuptools<81",
        "torch>=2.1",
        "torchvision",
        "kornia>=0.9",  # device-side augmentation (vissl_issl/data/device_augmentation.py)
        "hydra-core>=1.3,<1.4",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "scipy",
        "mpmath",
        "compressai==1.2.8",
        "matplotlib",
        "tqdm",
        "pyyaml",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.6", "hypothesis>=6"]},
)
