"""Benchmark: how often each face detector finds a face in six_emotions, and how fast it is.

    python benchmarks/face_detectors.py [--data-root DIR] [--detectors haar mtcnn] [--limit N] [--out CSV]

--data-root defaults to $EMOTIONVISION_SIX_EMOTIONS, else ../shared/datasets/six_emotions next to the
repository. Every image is decoded once (`load_rgb`: content decides the format, RGB out) and given
to each detector; the table shows, per class and overall, the share of images with a face, the
share with more than one face, and the detector's seconds per image (decode excluded). With
--out, a CSV gets one row per image and detector: the preferred box, the face count and seconds.
Runs on one thread, to leave the machine to other work.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import UnidentifiedImageError

from emotionvision.data.faces import DETECTORS, make_detector
from emotionvision.data.images import SkipReport, list_class_files, load_rgb

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = os.environ.get(
    "EMOTIONVISION_SIX_EMOTIONS", str(REPO_ROOT.parent / "shared" / "datasets" / "six_emotions")
)

CSV_HEADER = ["path", "label", "width", "height", "detector", "x0", "y0", "x1", "y1", "faces", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(DEFAULT_ROOT))
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--limit", type=int, default=None, help="at most N images per class")
    parser.add_argument("--out", type=Path, default=None, help="CSV of per-image boxes")
    args = parser.parse_args()

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    detectors = {name: make_detector(name) for name in args.detectors}
    classes = sorted(p.name for p in args.data_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    report = SkipReport()
    # stats[detector][class] = [images, found, several faces, seconds]
    stats: dict[str, dict[str, list[float]]] = {n: defaultdict(lambda: [0, 0, 0, 0.0]) for n in detectors}
    rows = []
    for label in classes:
        for path in list_class_files(args.data_root / label, report)[: args.limit]:
            try:
                image = load_rgb(path)
            except UnidentifiedImageError:
                report.add("not an image", path)
                continue
            except (OSError, ValueError, SyntaxError):
                report.add("unreadable image", path)
                continue
            for name, detector in detectors.items():
                start = time.perf_counter()
                boxes = detector.detect_all(image)
                seconds = time.perf_counter() - start
                entry = stats[name][label]
                entry[0] += 1
                entry[1] += bool(boxes)
                entry[2] += len(boxes) > 1
                entry[3] += seconds
                box = boxes[0] if boxes else ("", "", "", "")
                rel = path.relative_to(args.data_root).as_posix()
                rows.append([rel, label, image.width, image.height, name, *box, len(boxes), f"{seconds:.4f}"])

    print(f"data: {args.data_root}  skipped: { {k: len(v) for k, v in report.skipped.items()} }")
    for name, detector in detectors.items():
        print(f"\n{detector.settings_key()}")
        print(f"{'class':<10}{'n':>6}{'face found':>12}{'>1 face':>10}{'s/image':>10}")
        per_class = dict(stats[name])
        per_class["overall"] = [sum(v[i] for v in stats[name].values()) for i in range(4)]
        for label, (n, found, several, seconds) in per_class.items():
            print(f"{label:<10}{n:>6}{found / n:>12.1%}{several / n:>10.1%}{seconds / n:>10.3f}")
    if args.out:
        with args.out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            writer.writerows(rows)
        print(f"\nper-image boxes: {args.out}")


if __name__ == "__main__":
    main()
