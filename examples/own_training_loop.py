"""Per-instance privacy losses from your own training loop, with perinstance.PrivacyTracker.

Trains a small GroupNorm CNN of its own (in-place ReLUs included) on the embedded mnist5k digits
(offline) with an ordinary PyTorch loop, lets the tracker record every example's in-batch
gradient norm, and at the end shows the ten examples with the highest privacy loss P(x, alpha):
their ids and P are printed and their images saved as a PNG grid.

    python examples/own_training_loop.py --epochs 5 --out hardest.png

P(x, alpha) is a per-instance estimate of how much one example moves the run (Renyi divergence
of order alpha under the accounting noise privacy.beta), not a differential-privacy guarantee;
see docs/tracker.md for what it leaves out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

try:
    from perinstance import PrivacyTracker
    from perinstance.data import load_dataset
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from perinstance import PrivacyTracker
    from perinstance.data import load_dataset


class DigitNet(nn.Module):
    """A small CNN with GroupNorm (never BatchNorm: per-example gradients must stay per-example)."""

    def __init__(self, channels: int, classes: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("hardest.png"), help="PNG image grid to write")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--n-train", type=int, default=None, help="train on a stratified subset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, default=None, help="also write every example's P as CSV")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (small models: 1 is fastest)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset, n_train=args.n_train)
    train = data.train
    n = len(train)
    # The loader hands out each example's position 0 .. n-1 with it: the id the tracker records.
    loader = DataLoader(
        TensorDataset(train.x, train.y, torch.arange(n)),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    model = DigitNet(data.input_shape[0], data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=2e-3)
    tracker = PrivacyTracker(model, n, args.batch_size, optimizer=optimizer, index=train.index)

    model.train()
    for epoch in range(args.epochs):
        correct = 0
        for x, y, ids in loader:
            optimizer.zero_grad()
            out = tracker.backward(x, y, ids)  # forward + backward + in-batch norms
            optimizer.step()
            correct += int((out.logits.argmax(1) == y).sum())
        print(f"epoch {epoch + 1}/{args.epochs}: train accuracy {correct / n:.3f}")

    table = tracker.privacy_losses()  # index, label, privacy_loss, privacy_loss_4alpha, ...
    if args.table is not None:
        table.to_csv(args.table, index=False)
    hardest = table.sort_values("privacy_loss", ascending=False).head(10)
    alpha = f"{tracker.alpha:g}"
    print(f"ten highest privacy losses P(x, {alpha}) of {n} examples (beta {tracker.beta:g}):")
    print(f"{'rank':>4} {'id':>6} {'index':>6} {'label':>5} {'P(x, ' + alpha + ')':>12}")
    for rank, (row_id, row) in enumerate(hardest.iterrows(), start=1):
        index, label, loss = int(row["index"]), int(row["label"]), row["privacy_loss"]
        print(f"{rank:>4} {row_id:>6} {index:>6} {label:>5} {loss:>12.6g}")

    mean = torch.tensor(data.mean).view(-1, 1, 1)
    std = torch.tensor(data.std).view(-1, 1, 1)
    fig, axes = plt.subplots(2, 5, figsize=(8, 3.8))
    for ax, (row_id, row) in zip(axes.flat, hardest.iterrows()):
        image = (train.x[row_id] * std + mean).clamp(0, 1)
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"id {row_id}: {data.class_names[int(row['label'])]}, P={row['privacy_loss']:.3g}", fontsize=8
        )
        ax.axis("off")
    fig.suptitle(f"{args.dataset}: highest per-instance privacy loss P(x, {alpha})", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
