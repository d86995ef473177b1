"""Plain PyTorch peer of `emotionvision-train experiment=resnet18_augmented`: the same work, a bare loop.

    python benchmarks/plain_loop.py --size 224 --epochs 3 --workers 2 --out plain.json
    python benchmarks/plain_loop.py --loader naive --size 224 --epochs 3 --workers 2 --out naive.json

Same images, split, augmentation (conf/augmentation/standard.yaml), weighted cross-entropy, AdamW,
warmup + cosine schedule, ResNet-18 with 6 outputs, batch 32 (drop_last on train), shuffle and a
validation pass per epoch; no Lightning. `--loader cached` (default) reads the uint8 images of the
project's decode cache; `--loader naive` decodes every file with PIL each epoch through
torchvision's ImageFolder (Resize + CenterCrop), restricted to the same train/val files.
The split is `--split-csv` (a run's split.csv) or else the one the data module computes.
Per epoch it records wall seconds (train + validation), seconds blocked in next(loader) and
seconds of the training steps (data wait included), and prints and writes them (`--out`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import SkipReport
from emotionvision.runtime import set_torch_threads

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = os.environ.get(
    "EMOTIONVISION_SIX_EMOTIONS", str(REPO_ROOT.parent / "shared" / "datasets" / "six_emotions")
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(DEFAULT_ROOT))
    parser.add_argument("--split-csv", type=Path, default=None, help="CSV: path,label,split,group")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "cache")
    parser.add_argument("--loader", choices=["cached", "naive"], default="cached")
    parser.add_argument("--size", type=int, default=224, help="image side in px")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="torch threads: auto (as the commands' `threads` key) | a number",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="save checkpoint.pth each epoch")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the measurements")
    return parser


def augmentation(size: int) -> v2.Compose:
    """conf/augmentation/standard.yaml, on uint8 tensors."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomRotation(degrees=10),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.3),
        ]
    )


def load_split(args: argparse.Namespace) -> list[dict[str, str]]:
    """Manifest rows (path, label, split, group): --split-csv, else the data module's split."""
    if args.split_csv is not None:
        with args.split_csv.open(newline="") as handle:
            return list(csv.DictReader(handle))
    from emotionvision.data import EmotionDataModule

    datamodule = EmotionDataModule(args.data_root, image_size=args.size, cache_dir=args.cache_dir)
    datamodule.setup("fit")
    columns = ("path", "label", "split", "group")
    return [dict(zip(columns, map(str, row), strict=True)) for row in datamodule.manifest]


def split_digest(rows: list[dict[str, str]]) -> str:
    """SHA-1 of the sorted train/val (path, label, split) triples: equal digests, equal split."""
    lines = sorted(f"{r['path']},{r['label']},{r['split']}" for r in rows if r["split"] != "test")
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


class CachedImages(Dataset):
    """uint8 images (N, 3, S, S) and `targets`; `transform` runs on uint8, float in [0, 1] comes out."""

    def __init__(self, images: torch.Tensor, labels: list[int], transform: v2.Transform | None) -> None:
        self.images, self.targets, self.transform = images, labels, transform
        self.to_float = v2.ToDtype(torch.float32, scale=True)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.images[index]
        if self.transform is not None:
            pixels = self.transform(pixels)
        return self.to_float(pixels), self.targets[index]


def cached_datasets(rows: list[dict[str, str]], classes: list[str], args: argparse.Namespace) -> dict:
    """Train/val datasets over the project's decode cache (decoding what is missing)."""
    cache, datasets = DecodeCache(args.cache_dir, args.size), {}
    for split in ("train", "val"):
        members = [r for r in rows if r["split"] == split]
        paths = [Path(r["path"]) for r in members]
        kept, images = cache.get_many(paths, SkipReport())
        if len(kept) != len(paths):
            raise RuntimeError(f"{len(paths) - len(kept)} {split} images of the split cannot be decoded.")
        labels = [classes.index(r["label"]) for r in members]
        transform = augmentation(args.size) if split == "train" else None
        datasets[split] = CachedImages(torch.stack([i.pixels for i in images]), labels, transform)
    return datasets


def naive_datasets(rows: list[dict[str, str]], classes: list[str], args: argparse.Namespace) -> dict:
    """Train/val ImageFolder datasets: PIL decode, Resize, CenterCrop every epoch."""
    root = args.data_root.expanduser().resolve()  # the data module resolves root the same way
    resize = [v2.Resize(args.size, antialias=True), v2.CenterCrop(args.size), v2.PILToTensor()]
    datasets = {}
    for split in ("train", "val"):
        members = {r["path"] for r in rows if r["split"] == split}
        extra = [augmentation(args.size)] if split == "train" else []
        transform = v2.Compose([*resize, *extra, v2.ToDtype(torch.float32, scale=True)])
        dataset = torchvision.datasets.ImageFolder(
            str(root), transform=transform, is_valid_file=lambda p, m=members: p in m
        )
        if dataset.classes != classes or len(dataset) != len(members):
            raise RuntimeError(f"ImageFolder under {root} does not match the {split} split.")
        datasets[split] = dataset
    return datasets


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse class frequency of the training split, normalised to mean 1."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes)
    weights = counts.sum() / (num_classes * counts.clamp(min=1).float())
    return weights / weights.mean()


def train_one_epoch(model, criterion, optimizer, loader, normalize, device) -> dict[str, float]:
    """One pass over `loader`; seconds blocked in next(loader) and seconds of whole steps."""
    model.train()
    wait = steps = 0.0
    seen, loss_sum = 0, torch.zeros((), device=device)
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            images, targets = next(batches)
        except StopIteration:
            break
        fetched = time.perf_counter()
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = criterion(model(normalize(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(targets)
        seen += len(targets)
        wait += fetched - start
        steps += time.perf_counter() - start
    return {"data_wait_seconds": wait, "step_seconds": steps, "train_loss": loss_sum.item() / max(seen, 1)}


@torch.inference_mode()
def evaluate(model, loader, normalize, device) -> float:
    """Validation accuracy."""
    model.eval()
    correct = total = 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        correct += (model(normalize(images)).argmax(dim=1) == targets).sum().item()
        total += len(targets)
    return correct / total


def make_loaders(datasets: dict, args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    """Shuffled train batches (incomplete last batch dropped) and ordered validation batches."""
    options = {"num_workers": args.workers, "persistent_workers": args.workers > 0}
    train = DataLoader(datasets["train"], args.batch_size, shuffle=True, drop_last=True, **options)
    return train, DataLoader(datasets["val"], args.batch_size, shuffle=False, **options)


def make_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    """Linear warmup over --warmup-epochs, then cosine decay to zero at --epochs (stepped per epoch)."""
    lr_scheduler = torch.optim.lr_scheduler
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs - args.warmup_epochs))
    if args.warmup_epochs <= 0:
        return cosine
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=args.warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[args.warmup_epochs])


def main(args: argparse.Namespace) -> dict:
    set_torch_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    rows = load_split(args)
    classes = sorted({r["label"] for r in rows})
    build = cached_datasets if args.loader == "cached" else naive_datasets
    datasets = build(rows, classes, args)
    train_loader, val_loader = make_loaders(datasets, args)

    model = torchvision.models.resnet18(num_classes=len(classes)).to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def normalize(images: torch.Tensor) -> torch.Tensor:
        return (images - mean) / std

    weights = class_weights(datasets["train"].targets, len(classes)).to(device)
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = make_scheduler(optimizer, args)

    epochs = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        record = train_one_epoch(model, criterion, optimizer, train_loader, normalize, device)
        scheduler.step()
        record["val_acc"] = evaluate(model, val_loader, normalize, device)
        if args.checkpoint_dir is not None:
            args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            torch.save(state, args.checkpoint_dir / "checkpoint.pth")
        record = {"epoch": epoch, "seconds": time.perf_counter() - start, **record}
        epochs.append(record)
        print(json.dumps(record), flush=True)

    result = {
        "side": "plain" if args.loader == "cached" else "naive",
        "size": args.size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "split_sizes": {split: len(dataset) for split, dataset in datasets.items()},
        "split_digest": split_digest(rows),
        "args": {key: str(value) for key, value in vars(args).items()},
        "epochs": epochs,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
