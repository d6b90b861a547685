"""The method table (vissl_issl/methods.py) covers every registered loss, points at configs that
exist and train that loss, and the README's registry rows are its rows, defaults included."""

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.launcher import compose

import pytest
from classy_vision.losses import LOSS_REGISTRY

from conftest import REPO
from vissl_issl.losses import LOSSES
from vissl_issl.methods import METHODS, readme_loss_rows

CONFIGS = REPO / "configs" / "config"


def test_every_plugin_loss_has_a_row():
    assert {cls.NAME for cls in LOSSES} <= {method.loss for method in METHODS.values()}


def test_every_row_names_a_registered_loss_and_existing_configs():
    for name, method in METHODS.items():
        assert method.loss in LOSS_REGISTRY, name
        assert (CONFIGS / method.recipes).is_dir(), name
        for config in (method.digits_config, method.benchmark and method.benchmark.config):
            if config and not config.startswith("pretrain/simclr/simclr_8node"):  # VISSL's own config
                assert (CONFIGS / f"{config}.yaml").is_file(), (name, config)


@pytest.mark.parametrize("name", [name for name, method in METHODS.items() if method.digits_config])
def test_the_digits_config_trains_the_rows_loss(name):
    assert compose([f"config={METHODS[name].digits_config}"])[1].LOSS.name == METHODS[name].loss


def test_the_readme_registry_rows_are_the_method_tables():
    """Regenerate them with ``python -c "from vissl_issl.methods import readme_loss_rows;
    print(*readme_loss_rows(), sep=chr(10))"``."""
    readme = (REPO / "README.md").read_text().splitlines()
    stated = [line for line in readme if line.startswith("| loss | `")]
    generated = readme_loss_rows()
    assert stated == generated


def test_a_changed_default_changes_the_rows(monkeypatch):
    before = readme_loss_rows()
    dissl = next(cls for cls in LOSSES if cls.NAME == "dissl_loss")
    monkeypatch.setitem(dissl.DEFAULTS, "temperature_teacher", 0.25)
    changed = [row for row, old in zip(readme_loss_rows(), before) if row != old]
    assert len(changed) == 1 and "`dissl_loss`" in changed[0] and "`temperature_teacher` 0.25" in changed[0]
