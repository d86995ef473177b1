"""Benchmark: the standard augmentation's throughput (images/s) image by image, as loader workers run it
(`augmentation=standard`, torchvision), against whole batches (`batch_augmentation=standard`, kornia).

Reproduce (from the repository root):

    python benchmarks/augmentation_speed.py                       # 48 px (FER2013), batches of 256, CPU
    python benchmarks/augmentation_speed.py --size 224 --batch-size 64
    python benchmarks/augmentation_speed.py --device cuda         # the batch side on the GPU

Both sides take the same random uint8 images and return float images in [0, 1], as the training step
receives them: image by image, each augmented and converted as `ImageTensorDataset` does, then
stacked (what one loader worker does per batch, without the loader's transport); batch, converted and
then augmented as a batch on --device (what `EmotionDataModule.on_after_batch_transfer` does). The
two sides alternate for --rounds rounds, after one warm-up batch each; images/s is the median over
rounds, the ratio the median of each round's ratios. Torch runs --threads threads (default 1: one
loader worker's share). A loader with N workers serves about N times the image-by-image rate, less
transport, when nothing else competes for the cores.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torchvision.transforms import v2

from emotionvision.cli.schemas import register_schemas


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="image size (data.image_size)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="of the batch side")
    return parser.parse_args()


def augmentations(size: int) -> tuple[v2.Transform, torch.nn.Module]:
    """The shipped `augmentation=standard` and `batch_augmentation=standard` at `size` px."""
    register_schemas()  # the types train.yaml composes with (emotionvision-train registers them too)
    overrides = ["augmentation=standard", "batch_augmentation=standard", f"data.image_size={size}"]
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return instantiate(cfg.augmentation), instantiate(cfg.batch_augmentation)


def seconds(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    per_image, per_batch = augmentations(args.size)
    per_batch = per_batch.to(device)
    to_float = v2.ToDtype(torch.float32, scale=True)
    images = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8)
    sides = {
        "image by image": lambda: torch.stack([to_float(per_image(image)) for image in images]),
        f"batch ({device.type})": lambda: per_batch(to_float(images.to(device))),
    }
    for run in sides.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            elapsed = sum(seconds(run, device) for _ in range(args.batches))
            rates[name].append(args.batches * args.batch_size / elapsed)
    (image_side, batch_side) = sides
    ratios = [batch / image for batch, image in zip(rates[batch_side], rates[image_side], strict=True)]
    print(f"{args.size} px, batches of {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds")
    for name, values in rates.items():
        print(f"{name:>16}: {statistics.median(values):8.0f} images/s   (rounds: {values[0]:.0f}", end="")
        print("".join(f", {value:.0f}" for value in values[1:]) + ")")
    print(f"batch / image by image: {statistics.median(ratios):.1f}x")
    print("reproduce:\n  " + shlex.join([sys.executable, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
