"""Benchmark: prediction throughput (images/s) of a checkpoint through `Predictor`, a plain PyTorch loop
and its ONNX export under onnxruntime, side by side in one run.

Reproduce (from the repository root):

    python benchmarks/predict_speed.py                           # generated faces, fresh ResNet-18s
    python benchmarks/predict_speed.py --images ../shared/datasets/six_emotions --limit 192
    python benchmarks/predict_speed.py --ckpt RUN/checkpoints/best-epoch007.ckpt --images DIR
    python benchmarks/predict_speed.py --quick                   # a few seconds: every row, tiny sizes

Without --ckpt, one untrained model per --sizes (--backbone, 6 classes) is saved as the trainer saves
checkpoints (state_dict + hyper_parameters); --ckpt benchmarks that checkpoint at its own input size.
Each is exported with the project's exporter (`emotionvision.exporting.export`, which checks the file
against PyTorch). --images defaults to drawn faces generated into --work-dir; six_emotions (web photos
of every size) is the realistic choice. --limit images, spread over the folder, unreadable ones left out.

Model rows: the same decoded uint8 tensors (decode, start-up and one warm-up batch excluded), at each
size and --batches, with the sides measured in turn, in a rotated order each of --rounds rounds:
- predictor: `Predictor(ckpt).predict(files)`, emotionvision-predict's path, its `decode` replaced by a
  lookup of the decoded tensors (listing, batching, float conversion, the model, top-k and the rows);
- plain: a `torch.no_grad()` loop over the same tensors: stack, float, normalise, the network, softmax;
- onnx: `Predictor(the .onnx file)` as predictor (onnxruntime, the session emotionvision-predict opens).
images/s is the median over rounds; a ratio is the median of the same round's ratios.
End-to-end rows: `Predictor(ckpt).predict(files)` with its own decode, whole images (faces: none) or
the face crops of preprocess=face (faces: mtcnn; emotionvision.data.faces.FaceCrop()), one pass each;
decode is the share of its time in `decode` (file read, face detection, crop, resize), detect the
share in the MTCNN detector alone. Face crops change the pixels, not the model's work: the model rows
hold for both.

Torch runs --threads threads (default 2, as the commands' `threads` key), onnxruntime as many (its
session follows torch's count); the load average is printed before and after.
Targets on 2 cores: predictor >= 0.95x plain; onnx >= 1.3x plain (torch eager) at batch 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from emotionvision.data import faces
from emotionvision.data.demo import generate_demo_dataset
from emotionvision.data.images import DECODE_ERRORS, find_files
from emotionvision.exporting import export
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier
from emotionvision.models.classifier import load_classifier
from emotionvision.runtime import set_torch_threads

SIDES = ("predictor", "plain", "onnx")
CLASSES = ["anger", "disgust", "fear", "happy", "pain", "sad"]
GENERATED_SIDE = 320  # px of the generated drawn faces


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=None, help="image folder (default: generated)")
    parser.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: fresh models)")
    parser.add_argument("--backbone", default="resnet18", help="of the fresh models")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="px (default 48 224)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--limit", type=int, default=96, help="images per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of alternating model sides")
    parser.add_argument("--faces", choices=["both", "none", "mtcnn"], default="both", help="end-to-end rows")
    parser.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) threads")
    parser.add_argument("--work-dir", type=Path, default=None, help="checkpoints, exports, images")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the measurements")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, 8 small images, 1 round")
    args = parser.parse_args(argv)
    if args.ckpt is not None and args.sizes is not None:
        parser.error("--sizes: a --ckpt runs at its own input size")
    if args.quick:
        args.sizes, args.limit, args.rounds = [32], 8, 1
    args.sizes = args.sizes or [48, 224]
    if min(args.limit, args.rounds, *args.batches, *args.sizes) < 1:
        parser.error("--limit, --rounds, --batches and --sizes must be >= 1")
    args.work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="predict_speed-"))).resolve()
    return args


def fresh_checkpoint(backbone: str, size: int, folder: Path) -> Path:
    """An untrained model saved as the trainer saves its checkpoints."""
    torch.manual_seed(0)
    model = EmotionClassifier(backbone, CLASSES, input_size=size)
    path = folder / f"{backbone}-{size}px.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def image_files(args: argparse.Namespace) -> list[Path]:
    """--limit files of --images spread over its sorted listing (generated drawn faces by default)."""
    root = args.images
    if root is None:
        side = 96 if args.quick else GENERATED_SIDE
        per_class = math.ceil(args.limit / len(CLASSES))
        root = generate_demo_dataset(args.work_dir / "images", per_class, side)
    files = find_files([root])
    return files[:: max(1, len(files) // args.limit)][: args.limit]


class Stopwatch:
    """Seconds spent in the callables it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def decoded_tensors(predictor: Predictor, files: list[Path]) -> dict[Path, torch.Tensor]:
    """{file: uint8 (3, S, S)} of the readable `files`, decoded as the predictor decodes them."""
    decoded = {}
    for path in files:
        try:
            decoded[path] = predictor.decode(path)
        except DECODE_ERRORS as error:
            print(f"  {path} left out: {error}", file=sys.stderr)
    return decoded


def plain_loop(ckpt: Path) -> Callable[[list[torch.Tensor], int], list[int]]:
    """The bare PyTorch peer of the predictor: the checkpoint's network in a `torch.no_grad()` loop
    giving the top label of each decoded tensor."""
    classifier = load_classifier(ckpt)
    network, mean, std = classifier.model, classifier.mean, classifier.std

    def run(images: list[torch.Tensor], batch: int) -> list[int]:
        labels = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                pixels = torch.stack(images[start : start + batch]).float().div_(255)
                labels += network((pixels - mean) / std).softmax(dim=1).argmax(dim=1).tolist()
        return labels

    return run


def model_sides(ckpt: Path, onnx_path: Path, decoded: dict[Path, torch.Tensor]) -> dict[str, Callable]:
    """{side: run(files, batch)} over the decoded tensors of `files`, each built (start-up) before timing."""
    runners = {}
    for side, model in (("predictor", ckpt), ("onnx", onnx_path)):
        predictor = Predictor(model, device="cpu")
        predictor.decode = decoded.__getitem__  # decode excluded: the tensors are ready

        def run(files: list[Path], batch: int, predictor: Predictor = predictor) -> None:
            predictor.batch_size = batch
            predictor.predict(files)

        runners[side] = run
    plain = plain_loop(ckpt)
    runners["plain"] = lambda files, batch: plain([decoded[path] for path in files], batch)
    return runners


def time_model_sides(runners: dict[str, Callable], files: list[Path], batch: int, rounds: int) -> dict:
    """{side: [images/s of each round]}: one untimed batch of each side first, then the sides in turn,
    in an order rotated each round."""
    for run in runners.values():
        run(files[:batch], batch)
    speeds: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(rounds):
        for side in SIDES[round_ % 3 :] + SIDES[: round_ % 3]:
            start = time.perf_counter()
            runners[side](files, batch)
            speeds[side].append(len(files) / (time.perf_counter() - start))
    return speeds


def end_to_end(ckpt: Path, files: list[Path], batch: int, face_crop: faces.FaceCrop | None) -> dict:
    """One pass of `Predictor.predict` with its own decode (after an untimed batch): images/s and the
    shares of its time in decode and in face detection."""
    predictor = Predictor(ckpt, device="cpu", batch_size=batch)
    predictor.face_crop = face_crop
    decode, detect = Stopwatch(), Stopwatch()
    predictor.decode = decode.wrap(predictor.decode)
    detector = faces._shared_detector(face_crop.detector) if face_crop else None  # what the crop calls
    if detector is not None:
        detector.detect = detect.wrap(detector.detect)
    try:
        predictor.predict(files[:batch])  # first calls: allocations, MTCNN's networks
        decode.seconds = detect.seconds = 0.0
        start = time.perf_counter()
        predictor.predict(files)
        seconds = time.perf_counter() - start
    finally:
        if detector is not None:
            del detector.detect  # the class's method again
    return {"images_per_s": len(files) / seconds, "decode": decode.seconds / seconds,
            "detect": detect.seconds / seconds}  # fmt: skip


def measure_checkpoint(ckpt: Path, files: list[Path], args: argparse.Namespace) -> list[dict]:
    """The model rows and end-to-end rows of one checkpoint (exported to ONNX first)."""
    onnx_path, difference = export(ckpt, "onnx", args.work_dir / f"{ckpt.stem}.onnx")
    predictor = Predictor(ckpt, device="cpu")
    size = predictor.input_size
    print(f"{size}px: {onnx_path} (max abs difference to PyTorch {difference:.1e})", flush=True)
    predictor.face_crop = None  # model rows: whole images
    decoded = decoded_tensors(predictor, files)
    readable = list(decoded)
    runners, rows = model_sides(ckpt, onnx_path, decoded), []
    for batch in args.batches:
        speeds = time_model_sides(runners, readable, batch, args.rounds)
        row = {"kind": "model", "size": size, "batch": batch, "images": len(readable), "rounds": speeds}
        row |= {side: statistics.median(values) for side, values in speeds.items()}
        for side in ("predictor", "onnx"):
            row[f"{side}/plain"] = statistics.median(
                s / p for s, p in zip(speeds[side], speeds["plain"], strict=True)
            )
        rows.append(row)
        print(
            f"  batch {batch}: " + ", ".join(f"{side} {row[side]:.1f}" for side in SIDES) + " images/s",
            flush=True,
        )
    crops = {"none": None, "mtcnn": faces.FaceCrop()}
    for name in ("none", "mtcnn") if args.faces == "both" else (args.faces,):
        for batch in args.batches:
            row = {"kind": "end_to_end", "size": size, "batch": batch, "faces": name, "images": len(readable)}
            rows.append(row | end_to_end(ckpt, readable, batch, crops[name]))
            print(
                f"  end to end, faces {name}, batch {batch}: {rows[-1]['images_per_s']:.1f} images/s",
                flush=True,
            )
    return rows


def print_tables(rows: list[dict]) -> None:
    print(f"\n{'size':>5} {'batch':>5} {'predictor':>10} {'plain':>8} {'onnx':>8} {'pred/plain':>10} "
          f"{'onnx/plain':>10}   images/s, model only (decode excluded)")  # fmt: skip
    for row in (r for r in rows if r["kind"] == "model"):
        print(
            f"{row['size']:>5} {row['batch']:>5} {row['predictor']:>10.1f} {row['plain']:>8.1f} "
            f"{row['onnx']:>8.1f} {row['predictor/plain']:>9.3f}x {row['onnx/plain']:>9.3f}x"
        )
    print(f"\n{'size':>5} {'batch':>5} {'faces':>6} {'images/s':>9} {'decode':>7} {'detect':>7}"
          "   predictor end to end (decode, face detection: share of its time)")  # fmt: skip
    for row in (r for r in rows if r["kind"] == "end_to_end"):
        print(
            f"{row['size']:>5} {row['batch']:>5} {row['faces']:>6} {row['images_per_s']:>9.1f} "
            f"{row['decode']:>7.1%} {row['detect']:>7.1%}"
        )


def load() -> str:
    """The 1, 5 and 15 minute load averages, and the cores."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    threads = set_torch_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    environment = {key: os.environ.get(key, "") for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    print(f"work dir: {args.work_dir}\ntorch threads: {threads}  environment: {environment}")
    files = image_files(args)
    print(
        f"images: {len(files)} of {args.images or 'generated drawn faces'}\nload before: {load()}", flush=True
    )
    checkpoints = (
        [args.ckpt] if args.ckpt else [fresh_checkpoint(args.backbone, s, args.work_dir) for s in args.sizes]
    )
    rows = [row for ckpt in checkpoints for row in measure_checkpoint(ckpt, files, args)]
    print_tables(rows)
    print(f"\nload after: {load()}")
    print("targets (2 cores): predictor >= 0.95x plain; onnx >= 1.3x plain at batch 1")
    print("reproduce:\n  " + shlex.join([sys.executable, *sys.argv]))
    if args.out is not None:
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
        )
    return rows


if __name__ == "__main__":
    main()
