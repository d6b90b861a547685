"""Adds vissl_issl's configs to Hydra's search path, after VISSL's own.

A wheel install ships the repo's ``configs/`` as ``vissl_issl/hydra_configs``; a source checkout
(editable install) reads ``configs/`` beside the package. The package is located, not imported:
Hydra loads search-path plugins in every Hydra app of the environment.
"""

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def config_root() -> Path:
    package = Path(importlib.util.find_spec("vissl_issl").origin).parent
    packaged = package / "hydra_configs"
    return packaged if packaged.is_dir() else package.parent / "configs"


class VisslIsslSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="vissl_issl", path=f"file://{config_root()}")
