"""The rotation-invariant banana of lossyless (Dubois et al. 2021, "Lossy Compression for Lossless
Prediction", the authors' ``bin/banana/banana_viz_VIC.sh``) in plain PyTorch: a variational invariant
compressor (VIC) and the standard compressor it is compared with (VAE, "VC" in the paper), both on
this package's entropy bottleneck (``vissl_issl.maths.entropy_bottleneck``), then one figure of how
each one quantises the plane.

    python examples/banana_vic.py                     # both models, ~4 min on 2 busy CPU cores
    python examples/banana_vic.py --steps 30          # a smoke run
    python examples/banana_vic.py --out banana.png    # writes banana.png and banana.json

The data are 2-D points ``x`` from a banana-shaped density; the task is invariant to rotations about
the origin, whose maximal invariant is the radius ``||x||``. Both models compress ``x`` into a 2-D code
``z_hat`` (an MLP encoder, then the factorized entropy bottleneck) and minimise, per batch::

    L = lambda * E[D] + beta * E[R]      D = ||g(z_hat) - t||^2 (summed over the 2 coordinates)
                                         R = -log q(z_hat), in nats, under the learned prior q

with a decoder MLP ``g`` and a target ``t``: VIC reconstructs the representative of x's orbit, the
point at radius ``||x||`` on the 225-degree ray, from a random point of that orbit; VAE reconstructs x
from x. So VIC only needs to keep the radius: its quantisation cells are rings around the origin and
it needs fewer bits than VAE, whose cells are a grid over the data.

The settings, the budget scaled down from the authors' and the measured numbers: docs/compression.md.
"""

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on CI machines

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import ListedColormap
from torch import Tensor, nn

from vissl_issl.maths.entropy_bottleneck import EntropyBottleneck

# The banana (lossyless ``BananaDistribution``, curvature 0.05, factor 6, scale 1/2): standard
# deviations of the base Gaussian, bend, rotation in degrees, shift.
BANANA_STD = (3.0, 0.5)
BEND = 0.1
BANANA_ANGLE = -40.0
BANANA_SHIFT = (-0.75, -1.0)
REPRESENTATIVE_ANGLE = 225.0  # the authors' "7.5 o'clock" ray: (-r, 0) rotated by 45 degrees

Z_DIM, HIDDEN = 2, 1024
BETA_PER_BIT = 0.07 * math.log(2)  # the authors' 0.07 weighs the rate in nats
LR, LR_DECAY, CODER_LR_DECAY = 1e-2, 1000.0, 100.0  # their lr: 3e-4, for 400x more samples
MAX_GRAD_NORM = 3.0
TEST_SIZE = 10_000
LIMITS = (-8.0, 10.0)  # both axes of the figure: the data and VIC's representatives (lower left)


def rotate(points: Tensor, degrees: Union[float, Tensor]) -> Tensor:
    """Rotates the rows ``(x, y)`` of ``points`` about the origin, counter-clockwise, by ``degrees``
    (a number, or one per row): ``(x cos a - y sin a, x sin a + y cos a)``, lossyless's ``rotate``."""
    angle = torch.as_tensor(degrees, dtype=points.dtype) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = points.unbind(-1)
    return torch.stack([x * cos - y * sin, x * sin + y * cos], dim=-1)


def banana(noise: Tensor) -> Tensor:
    """Standard normal ``noise`` ``(N, 2)`` -> banana samples: ``b = noise * (3, 0.5)``, then
    ``b_1 += 0.1 (b_0^2 - 9)``, then a rotation by -40 degrees, then a shift by (-0.75, -1)."""
    base = noise * torch.tensor(BANANA_STD)
    b0, b1 = base.unbind(-1)
    bent = torch.stack([b0, b1 + BEND * (b0**2 - BANANA_STD[0] ** 2)], dim=-1)
    return rotate(bent, BANANA_ANGLE) + torch.tensor(BANANA_SHIFT)


def sample_banana(n: int, generator: torch.Generator) -> Tensor:
    """``n`` fresh banana samples ``(n, 2)`` from ``generator``."""
    return banana(torch.randn(n, 2, generator=generator))


def representative(x: Tensor) -> Tensor:
    """The representative of x's orbit under rotations: ``||x|| (cos 225°, sin 225°)``."""
    angle = math.radians(REPRESENTATIVE_ANGLE)
    return x.norm(dim=-1, keepdim=True) * torch.tensor([math.cos(angle), math.sin(angle)])


def random_rotation(points: Tensor, generator: torch.Generator) -> Tensor:
    """Each row rotated by its own angle ~ U(0, 360): a uniform point of its orbit, the circle of its radius."""
    return rotate(points, torch.rand(len(points), generator=generator) * 360)


class Task(NamedTuple):
    """What a model reconstructs (``target(x)``), what its encoder sees in training
    (``train_input(target, generator)``), and lambda, the weight of its distortion."""

    target: Callable[[Tensor], Tensor]
    train_input: Callable[[Tensor, torch.Generator], Tensor]
    distortion_weight: float


TASKS = {
    # VIC's encoder sees any point of the orbit (its input is x's representative, randomly rotated)
    # and must give back the orbit's representative: only the radius is worth coding.
    "VIC": Task(representative, random_rotation, distortion_weight=1.0),
    # Their factor_beta 0.5 for VAE halves the rate's weight: D + 0.035 R, i.e. (2 D + 0.07 R) / 2.
    "VAE": Task(lambda x: x, lambda target, generator: target, distortion_weight=2.0),
}


def mlp(in_dim: int, out_dim: int, hidden: int = HIDDEN) -> nn.Sequential:
    """The authors' ``mlp_fancy``: (Linear, BatchNorm, Softplus) twice, then Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.Softplus(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.Softplus(),
        nn.Linear(hidden, out_dim),
    )  # fmt: skip


class Compressor(nn.Module):
    """``x -> z = f(x)`` (the encoder MLP's 2 outputs) ``-> z_hat`` (the bottleneck, in_dim = z_dim
    = 2, so its own encoder is the identity) ``-> g(z_hat)`` (the decoder MLP)."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.encoder = mlp(2, Z_DIM, hidden)
        self.bottleneck = EntropyBottleneck(Z_DIM, Z_DIM, prior="factorized")
        self.decoder = mlp(Z_DIM, 2, hidden)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(N, 2)`` -> reconstruction ``(N, 2)``, ``z_hat`` ``(N, 2)``, bits ``(N,)``: noisy
        ``z_hat`` in training, rounded in evaluation."""
        z_hat, _, bits = self.bottleneck(self.encoder(x))
        return self.decoder(z_hat), z_hat, bits


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """``(N, 2)`` x 2 -> ``(N,)``: the Gaussian distortion up to constants, summed over coordinates."""
    return (prediction - target).pow(2).sum(dim=-1)


def train(model: Compressor, task: Task, steps: int, batch_size: int, lr: float, generator: torch.Generator) -> None:
    """``steps`` Adam steps on ``lambda D + beta R``, fresh banana samples each; the quantiles get
    their own Adam on the auxiliary loss, which reads the densities detached (spec A.1, A.8)."""
    named = dict(model.named_parameters())
    quantiles = [p for name, p in named.items() if name.endswith("quantiles")]
    parameters = [p for name, p in named.items() if not name.endswith("quantiles")]
    optimizer, coder = torch.optim.Adam(parameters, lr=lr), torch.optim.Adam(quantiles, lr=lr)
    schedulers = [
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_DECAY ** (-1 / steps)),
        torch.optim.lr_scheduler.ExponentialLR(coder, gamma=CODER_LR_DECAY ** (-1 / steps)),
    ]
    model.train()
    for step in range(1, steps + 1):
        target = task.target(sample_banana(batch_size, generator))
        reconstruction, _, bits = model(task.train_input(target, generator))
        distortion, rate = squared_error(reconstruction, target).mean(), bits.mean()
        loss = task.distortion_weight * distortion + BETA_PER_BIT * rate
        optimizer.zero_grad(set_to_none=True)
        coder.zero_grad(set_to_none=True)
        (loss + model.bottleneck.aux_loss()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
        optimizer.step()
        coder.step()
        for scheduler in schedulers:
            scheduler.step()
        if step % max(1, steps // 5) == 0 or step == steps:
            print(f"  step {step}/{steps}: distortion {distortion.item():.3f}, rate {rate.item():.2f} bits")


@torch.no_grad()
def evaluate(model: Compressor, task: Task, x: Tensor) -> Dict[str, float]:
    """Rates and distortion on test points ``x``, in evaluation mode; the encoder sees x itself (for
    VIC a point of its orbit like any other). Builds the coder's tables first."""
    model.eval()
    model.bottleneck.update()
    reconstruction, z_hat, bits = model(x)
    records = model.bottleneck.compress(model.encoder(x))
    return {
        "rate_bits_estimated": bits.mean().item(),
        "rate_bits_coded": 8 * sum(map(len, records)) / len(records),
        "distortion": squared_error(reconstruction, task.target(x)).mean().item(),
        "codes_used": len(torch.unique(z_hat, dim=0)),
    }


@torch.no_grad()
def plot_quantisation(ax: plt.Axes, model: Compressor, x: Tensor, grid_size: int) -> None:
    """Colours every point of a ``grid_size``^2 grid by the code it maps to, then draws the data
    ``x`` and the reconstruction of every code that ``x`` uses (evaluation mode)."""
    model.eval()
    ticks = torch.linspace(*LIMITS, grid_size)
    grid = torch.cartesian_prod(ticks, ticks).flip(-1)  # rows of (x, y), x fastest: an image's layout
    _, codes = torch.unique(model(grid)[1], dim=0, return_inverse=True)
    # torch.unique numbers the codes in lexicographic order: cells next to each other along z's last
    # dimension get consecutive numbers, so different colours of the 20.
    palette = ListedColormap(plt.get_cmap("tab20").colors)
    image = (codes % 20).reshape(grid_size, grid_size).numpy()
    ax.imshow(image, cmap=palette, vmin=0, vmax=19, origin="lower", extent=(*LIMITS, *LIMITS), alpha=0.55)
    ax.scatter(*x.T.numpy(), s=1, c="k", alpha=0.25, linewidths=0, label="data")
    used = torch.unique(model(x)[1], dim=0)
    ax.scatter(*model.decoder(used).T.numpy(), s=30, marker="X", c="crimson", edgecolors="w", linewidths=0.5,
               label="reconstructions")  # fmt: skip
    ax.plot(0, 0, "k+", markersize=10)
    ax.set(xlim=LIMITS, ylim=LIMITS, aspect="equal")


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description="VIC and VAE on the rotation-invariant banana, one figure.")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--grid", type=int, default=250, help="grid points per axis of the figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/compression/banana.png"))
    args = parser.parse_args(argv)

    results: Dict[str, Dict[str, float]] = {}
    figure, axes = plt.subplots(1, 2, figsize=(12, 6.4), constrained_layout=True)
    test = sample_banana(TEST_SIZE, torch.Generator().manual_seed(args.seed + 1))
    for ax, (name, task) in zip(axes, TASKS.items()):
        torch.manual_seed(args.seed)  # the same initial weights for both models
        generator = torch.Generator().manual_seed(args.seed)
        print(f"{name}: {args.steps} steps of {args.batch_size} samples")
        model = Compressor()
        start = time.time()
        train(model, task, args.steps, args.batch_size, args.lr, generator)
        seconds = round(time.time() - start, 1)
        results[name] = {**evaluate(model, task, test), "train_seconds": seconds}
        plot_quantisation(ax, model, test[:3000], args.grid)
        r = results[name]
        print(f"{name}: rate {r['rate_bits_estimated']:.2f} bits estimated, {r['rate_bits_coded']:.1f} bits coded; "
              f"distortion {r['distortion']:.3f}; {r['codes_used']} codes; {r['train_seconds']:.0f} s")  # fmt: skip
        ax.set_title(
            f"{name}: {r['rate_bits_estimated']:.2f} bits (estimated), {r['rate_bits_coded']:.1f} bits (coded)\n"
            f"distortion {r['distortion']:.3f}, {r['codes_used']} codes on {TEST_SIZE} test samples"
        )
    axes[1].legend(loc="upper left", markerscale=3)
    figure.suptitle(
        f"Quantisation of the plane (colour: the code a point maps to), {args.steps} steps of {args.batch_size}; "
        f"beta = 0.07 per nat, lambda = 1 (VIC), 2 (VAE)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    settings = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    args.out.with_suffix(".json").write_text(json.dumps({"settings": settings, **results}, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return results


if __name__ == "__main__":
    main()
