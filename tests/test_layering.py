"""The package's layering (docs/architecture.md): which folder may import which, and a core that
runs with VISSL and classy_vision not importable."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

from conftest import REPO

PACKAGE = REPO / "vissl_issl"
CORE = {"maths", "architectures", "config", "schedules", "optim", "data", "checkpoints", "atomic_files"}
CORE |= {"losses", "hub", "weights", "methods", "evaluation.core", "compression.core"}
# evaluation/ holds two units: its plain-torch core on cached features, which the plugin's online
# evaluation hook runs, and the modules that build VISSL models through the plugin (the probe tool).
EVALUATION_CORE = {"features", "knn", "linear_probe", "subsets"}
# compression/ likewise: the container, the codec baselines and the compressor API need no VISSL;
# coding a VISSL model's head and the report tool do.
COMPRESSION_CORE = {"bitstream", "classical", "image_arrays", "matched_accuracy", "compressor"}
# What each unit (a sub-package or top-level module of vissl_issl) may import from vissl_issl.
ALLOWED: Dict[str, Set[str]] = {
    "maths": set(),
    "architectures": set(),
    "config": set(),
    "schedules": {"config"},
    "optim": set(),
    "data": set(),
    "checkpoints": set(),
    "atomic_files": set(),
    "losses": {"maths", "architectures", "config"},
    "hub": {"architectures", "checkpoints"},
    "weights": {"architectures", "checkpoints", "hub"},
    "methods": {"losses"},
    "compat": {"optim"},
    "evaluation.core": set(),
    "plugin": CORE - {"hub", "methods"} | {"compat"},
    "evaluation": {"checkpoints", "data", "plugin", "weights", "evaluation.core"},
    "compression.core": {"maths", "checkpoints", "weights"},
    "compression": {"maths", "architectures", "checkpoints", "evaluation", "evaluation.core", "plugin"}
    | {"compression.core"},
    "experiments": {"evaluation", "evaluation.core", "plugin", "compression", "compression.core"},
}
VISSL_PACKAGES = ("vissl", "classy_vision", "fairscale")


def module_unit(parts: Tuple[str, ...]) -> str:
    """The unit of module ``vissl_issl.<parts>`` (or of a name defined in it)."""
    if parts[0] == "evaluation" and len(parts) > 1 and parts[1] in EVALUATION_CORE:
        return "evaluation.core"
    if parts[0] == "compression" and len(parts) > 1 and parts[1] in COMPRESSION_CORE:
        return "compression.core"
    return parts[0]


def unit(path: Path) -> str:
    return module_unit(path.relative_to(PACKAGE).with_suffix("").parts)


def imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Absolute module names imported anywhere in ``path`` (top level or inside functions)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            yield from ((name, node.lineno) for name in names)


def modules():
    return sorted(path for path in PACKAGE.rglob("*.py") if unit(path) != "__init__")


def test_every_unit_has_a_rule():
    assert {unit(path) for path in modules()} <= set(ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    own = unit(path)
    wrong = []
    for name, line in imports(path):
        parts = name.split(".")
        imported = module_unit(tuple(parts[1:])) if parts[0] == "vissl_issl" and len(parts) > 1 else own
        if imported != own and imported not in ALLOWED[own]:
            wrong.append(f"line {line}: {name}")
        if own in CORE and parts[0] in VISSL_PACKAGES:
            wrong.append(f"line {line}: {name} (the core imports no VISSL)")
    assert not wrong, f"{path.relative_to(REPO)} ({own}) may import {sorted(ALLOWED[own])} only: {wrong}"


@pytest.mark.slow
def test_the_core_trains_with_vissl_and_classy_vision_blocked():
    """Every core module imports, and every loss builds from keyword arguments and back-propagates,
    in a process where importing VISSL or classy_vision raises."""
    core_modules = [
        ".".join(("vissl_issl", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in modules()
        if unit(path) in CORE
    ]
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for blocked in {VISSL_PACKAGES!r}:
            sys.modules[blocked] = None
        for name in {core_modules!r}:
            importlib.import_module(name)
        import torch
        from vissl_issl.architectures.resnet import ResNetArch, build_resnet
        from vissl_issl.losses import LOSSES, CISSLLoss, CSimCLRLoss, DISSLLoss, WMSELoss

        inferred = {{"num_crops": 2, "num_classes": 10, "embedding_dim": 10, "num_samples": 2, "kappa_e": 16384.0,
                    "likelihood": "gaussian", "image_shape": [3, 16, 16]}}
        for cls in LOSSES:  # every loss builds from keyword arguments
            cls(**{{name: inferred.get(name, value) for name, value in cls.DEFAULTS.items()}})

        torch.manual_seed(0)
        trunk = build_resnet(ResNetArch(18, small_image_stem=True))
        teacher, student = torch.nn.Linear(512, 10), torch.nn.Linear(512, 10)
        images = torch.rand(2 * 4, 3, 16, 16)
        features = trunk(images)
        for loss in (
            DISSLLoss(num_crops=2, num_classes=10, crops_for_teacher=[0, 1], temperature_teacher=0.5,
                      temperature_student=1.0, lambda_maximality=2.3, beta_det_inv=0.6, warmup_beta_iters=None),
            CISSLLoss(temperature=0.1),
            CSimCLRLoss(kappa_e=1024.0, kappa_b=10.0, beta=1.0, sampling=True, embedding_dim=10),
            WMSELoss(w_size=4, w_iter=1, w_eps=0.1, normalize=True, num_samples=2, embedding_dim=10),
        ):
            outputs = [teacher(features), student(features)]
            value = loss(outputs if isinstance(loss, (DISSLLoss, CISSLLoss)) else outputs[1])
            value.backward(retain_graph=True)
            assert torch.isfinite(value), value
        assert trunk.conv1.weight.grad.abs().sum() > 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {VISSL_PACKAGES!r} and sys.modules[m])
        print("loaded:", loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "loaded: []"
