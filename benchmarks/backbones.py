"""Backbone benchmark: parameters and training throughput of every registered backbone at 48 px.

Reproduce (from the repository root, on an otherwise idle machine; --threads as the commands' `threads`
key, e.g. 2 for docs/results.md's 2-core figures):

    python benchmarks/backbones.py --threads 2
    python benchmarks/backbones.py --threads 2 --timm convnext_nano  # and timm architectures
    python benchmarks/backbones.py --threads 2 --stems small small_pool  # and ResNet-18's other stems
    python benchmarks/backbones.py --threads 2 --backbones resnet18 vit_b_16 --steps 5 --rounds 1  # quick

Every backbone is an `EmotionClassifier` with FER2013's 7 classes, trained as the trainer trains it:
`training_step` (forward, weighted cross-entropy, the training metrics), backward and an AdamW step
(conf/optimizer/adamw.yaml) on random batches of --batch-size images. Each round times every backbone
in turn (--warmup untimed steps, then --steps timed ones), then the next round, so that drifts in
machine load hit all of them alike. images/s is the median over rounds; s/epoch projects it to
FER2013's 28,709 training images (the training steps alone: no data loading, validation or
checkpoints); vs resnet18 is the median over rounds of the ratio of s/epoch to resnet18's in the same
round (resnet18 is always measured). A backbone that cannot take --size runs at the smallest size it
accepts (Swin-T: a multiple of 32, so 64 px; Inception-V3: 299 px, very slow on a CPU), shown as size.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from emotionvision.models import BACKBONES, EmotionClassifier
from emotionvision.models.backbones import STEMS, TIMM, smallest_input_size
from emotionvision.models.losses import CrossEntropy
from emotionvision.runtime import set_torch_threads

FER2013_TRAIN_IMAGES = 28_709
FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
REFERENCE = "resnet18"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=sorted(BACKBONES), choices=sorted(BACKBONES))
    parser.add_argument("--timm", nargs="*", default=[], metavar="NAME", help="timm architectures too")
    parser.add_argument("--stems", nargs="*", default=[], choices=STEMS[1:], help="resnet18 stems too")
    parser.add_argument("--size", type=int, default=48, help="image side in px")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per backbone and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="auto", help="torch threads: auto (as `threads`) | a number")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.threads = args.threads if args.threads == "auto" else int(args.threads)
    return args


Key = tuple[str, str | None, str]  # backbone, timm name, model.stem


def build(key: Key, size: int) -> tuple[EmotionClassifier, torch.optim.Optimizer]:
    """The classifier (backbone, timm name, stem) for `size` px and its AdamW, as the default config has."""
    backbone, name, stem = key
    model = EmotionClassifier(
        backbone,
        FER2013_CLASSES,
        input_size=size,
        stem=stem,
        name=name,
        loss=CrossEntropy(class_weighted=True),
    )
    model.loss.set_class_weights(torch.ones(len(FER2013_CLASSES)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    return model.train(), optimizer


def seconds_per_step(
    model: EmotionClassifier, optimizer: torch.optim.Optimizer, batch: tuple, steps: int, warmup: int
) -> float:
    """Mean seconds of `steps` training steps after `warmup` untimed ones."""
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch, step).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def label(key: Key) -> str:
    backbone, name, stem = key
    return (backbone if name is None else f"{backbone}/{name}") + (
        "" if stem == "standard" else f" stem={stem}"
    )


def main() -> None:
    args = parse_args()
    threads = set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    keys = [(name, None, "standard") for name in dict.fromkeys([REFERENCE, *args.backbones])]
    keys += [(REFERENCE, None, stem) for stem in args.stems]
    keys += [(TIMM, name, "standard") for name in args.timm]
    sizes = {key: args.size if key[0] == TIMM else smallest_input_size(key[0], args.size) for key in keys}
    built = {key: build(key, sizes[key]) for key in keys}
    batches = {}
    for size in set(sizes.values()):
        images = torch.rand(args.batch_size, 3, size, size)
        targets = torch.arange(args.batch_size) % len(FER2013_CLASSES)
        batches[size] = (images, targets, torch.arange(args.batch_size))
    seconds: dict[tuple, list[float]] = {key: [] for key in keys}
    for round_ in range(args.rounds):
        for key in keys:
            model, optimizer = built[key]
            seconds[key].append(
                seconds_per_step(model, optimizer, batches[sizes[key]], args.steps, args.warmup)
            )
            print(
                f"[round {round_ + 1}/{args.rounds}] {label(key)}: {seconds[key][-1]:.3f} s/step", flush=True
            )

    reference = seconds[(REFERENCE, None, "standard")]
    print(
        f"\nTraining steps at batch {args.batch_size}, {threads} torch threads, median of {args.rounds} "
        f"rounds of {args.steps} steps; s/epoch: FER2013's {FER2013_TRAIN_IMAGES:,} training images"
    )
    print(f"{'backbone':<24} {'size':>5} {'params':>8} {'images/s':>9} {'s/epoch':>8} {'vs resnet18':>12}")
    for key in keys:
        model, _ = built[key]
        parameters = sum(p.numel() for p in model.model.parameters())
        images_per_s = args.batch_size / statistics.median(seconds[key])
        ratio = statistics.median(s / r for s, r in zip(seconds[key], reference, strict=True))
        print(
            f"{label(key):<24} {sizes[key]:>5} {parameters / 1e6:>7.2f}M {images_per_s:>9.1f} "
            f"{FER2013_TRAIN_IMAGES / images_per_s:>8.0f} {ratio:>11.2f}x"
        )
    print(f"\nReproduce: python benchmarks/{shlex.join(['backbones.py', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
