"""Stratified, group-aware train/val/test splits and cross-validation folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from emotionvision.data.manifest import SPLITS
from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

LEFT_OUT = ""  # the split name of an image a fold leaves out


@dataclass(frozen=True)
class Splitter:
    """How images are split. Without `folds`: stratified by class, each group whole, by `ratios`
    (train, val and test shares), deterministic in `seed`; a source's preset splits are kept instead,
    validation carved from train where they have none. With `folds` (a number, or 'loso': a fold per
    subject), fold `fold` of a cross-validation is the test split and validation is carved from the
    rest by the train and val shares."""

    ratios: tuple[float, ...] = (0.7, 0.15, 0.15)
    seed: int = 42
    folds: int | str | None = None
    fold: int | None = None

    def fold_count(self, subjects: np.ndarray | None, presets: bool, where: Path, images: int) -> int:
        """How many folds `folds` makes: the number, or for loso the number of `subjects` (ids per
        image, None where nothing names subjects); UsageError naming the option for anything else, and
        for more folds than the `images` listed (or their subjects) can make groups: each fold tests
        whole groups, and near-duplicates only join images into fewer."""
        if self.folds == "loso" and subjects is None:
            raise UsageError("data.folds=loso leaves one group out: set data.group_by to name each subject.")
        if self.folds != "loso" and (not isinstance(self.folds, int) or self.folds < 2):
            raise UsageError(f"data.folds={self.folds}: give a number of folds of 2 or more, or loso.")
        if presets:
            raise UsageError(
                f"data.folds: cross-validation splits all images itself, but {where} presets a split: drop "
                "data.split_file, or use data without train/ and test/ folders or a split column."
            )
        count = None if subjects is None else len(np.unique(subjects))
        if self.folds == "loso":
            if count < 2:
                raise UsageError(
                    f"data.folds=loso: {where} has one subject; leaving one out needs two or more."
                )
            return count
        if count is not None and self.folds > count:
            raise UsageError(
                f"data.folds={self.folds}: {where} has {count} subjects, each kept whole in one fold: set "
                f"data.folds to {count} or fewer (or loso)."
            )
        if self.folds > images:
            raise UsageError(
                f"data.folds={self.folds}: {where} holds {images} images of the chosen classes, each fold "
                f"testing whole groups of them: set data.folds to {images} or fewer (5 or 10 is usual)."
            )
        return self.folds

    def check(self, subjects: np.ndarray | None, presets: bool, where: Path, images: int) -> None:
        """UsageError naming the option when `folds` and `fold` do not pick a fold of the `images`
        listed."""
        if self.folds is None:
            return
        count = self.fold_count(subjects, presets, where, images)
        if self.fold is None:
            raise UsageError("data.folds is set but data.fold is not: emotionvision-train runs every fold.")
        if not 0 <= self.fold < count:
            raise UsageError(
                f"data.fold={self.fold}: data.folds={self.folds} has no such fold (they count from 0)."
            )

    def split(
        self,
        labels: np.ndarray,
        groups: np.ndarray,
        preset: np.ndarray,
        subjects: np.ndarray | None,
        duplicates: np.ndarray,
        class_names: list[str],
        where: Path,
    ) -> np.ndarray:
        """The split name of each image (`LEFT_OUT` for one a fold leaves out); `preset`: the source's
        split names (None where it sets none), `duplicates`: duplicate groups."""
        if self.folds is not None:
            return self._fold_splits(labels, groups, subjects, duplicates)
        if preset[0] is not None:
            return self._preset_splits(labels, groups, preset, where)
        check_stratifiable(labels, groups, self.ratios, class_names, where)
        return stratified_group_split(labels, groups, self.ratios, self.seed)

    def target_ratios(self, presets: bool, splits: np.ndarray) -> list[float] | None:
        """The train, val and test shares of a split made here (None for preset splits). A loso fold's
        test share is its subject's share of `splits` (the split names), the rest shared by the train
        and val shares: validation is carved from whole subjects, and its size is checked too."""
        if self.folds is None:
            return None if presets else list(self.ratios)
        if self.folds == "loso":
            return rest_ratios(float(np.mean(splits == "test")), self.ratios)
        return fold_ratios(self.folds, self.ratios)

    def _fold_splits(
        self, labels: np.ndarray, groups: np.ndarray, subjects: np.ndarray | None, duplicates: np.ndarray
    ) -> np.ndarray:
        """Fold `fold` as the test split. For loso the test split is subject `fold`'s images (subject
        ids number the sorted names of every listed image, so `fold_count` needs no decode), and images
        of other subjects that duplicate one of them are left out. Not scikit-learn's LeaveOneGroupOut:
        it numbers folds over the subjects left after decoding, so a subject whose images all failed
        would shift every later fold."""
        if self.folds == "loso":
            test = subjects == self.fold
            left_out = ~test & np.isin(duplicates, duplicates[test])
        else:
            test = kfold_parts(labels, groups, self.folds, self.seed) == self.fold
            left_out = np.zeros(len(labels), dtype=bool)
        if not test.any():
            raise UsageError(f"data.fold={self.fold}: the fold holds no usable image (see skipped.csv).")
        if left_out.any():
            log.warning(
                "Fold %d: %d images of other subjects duplicate held-out images: left out (skipped.csv)",
                self.fold, int(left_out.sum()),
            )  # fmt: skip
        splits = np.full(len(labels), "test", dtype=object)
        rest = ~test & ~left_out
        splits[rest] = carve_validation(labels[rest], groups[rest], self.ratios, self.seed)
        splits[left_out] = LEFT_OUT
        return splits.astype(str)

    def _preset_splits(
        self, labels: np.ndarray, groups: np.ndarray, preset: np.ndarray, where: Path
    ) -> np.ndarray:
        """The preset split names, validation carved from train where none is preset."""
        splits = preset.astype(str)
        if "train" not in splits:
            raise UsageError(f"{where} presets no image to the train split: give some images split train.")
        if "val" not in splits:
            train = splits == "train"
            splits[train] = carve_validation(labels[train], groups[train], self.ratios, self.seed)
        leaking = len(set(groups[splits != "test"]) & set(groups[splits == "test"]))
        if leaking:
            log.warning("%d duplicate groups span the preset training and test images.", leaking)
        return splits


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Majority label of each group (smallest label on ties)."""
    votes = np.zeros((int(groups.max()) + 1, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(votes, (groups, labels), 1)
    return votes.argmax(axis=1)


def deal_groups(labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """A part index per image; each group goes whole to one part, and every class is shared out by
    `ratios` (a zero fraction gets nothing). Deterministic in `seed`. Each class's groups (a group
    counts as its majority class) are dealt to the part furthest below its target count.

    Not a scikit-learn splitter: none makes a stratified group split of arbitrary shares
    (StratifiedGroupKFold's test share is 1/k, GroupShuffleSplit does not stratify). Dealing keeps each
    class within one group of its share of every part (70/15/15 exactly, up to one image, for
    single-image groups), gives every part with a share an image of each class with enough groups,
    and keeps the split existing runs recorded in their split.csv."""
    ratios_array = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    group_label = _group_labels(groups, labels)
    group_size = np.bincount(groups)
    rng = np.random.default_rng(seed)
    group_part = np.zeros(len(group_size), dtype=np.int64)
    for label in np.unique(labels):
        class_groups = rng.permutation(np.flatnonzero(group_label == label))
        target = ratios_array * group_size[class_groups].sum()
        assigned = np.zeros(len(ratios_array))
        for group in class_groups:
            # every part with a share gets one group first, then the one furthest below its target
            empty = (target > 0) & (assigned == 0)
            shortfall = np.where(empty if empty.any() else target > 0, target - assigned, -np.inf)
            choice = int(np.argmax(shortfall))
            group_part[group] = choice
            assigned[choice] += group_size[group]
    return group_part[groups]


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int
) -> np.ndarray:
    """Split names per image (`ratios`: train, val, test fractions), dealt by `deal_groups`."""
    return np.array(SPLITS)[deal_groups(labels, groups, ratios, seed)]


def carve_validation(labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """'train' or 'val' per image of a training part, by the train and val shares of `ratios`."""
    _, part_groups = np.unique(groups, return_inverse=True)
    return stratified_group_split(labels, part_groups, [ratios[0], ratios[1], 0.0], seed)


def kfold_parts(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each image by scikit-learn's StratifiedGroupKFold (groups shuffled by `seed`): each
    group whole in one fold, the folds' class mixes as alike as the groups allow (groups of several
    classes, such as subjects, count with all their labels)."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    parts = np.empty(len(labels), dtype=np.int64)
    try:
        for index, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            parts[test] = index
    except ValueError as error:  # more folds than groups, or than images of every class
        raise UsageError(f"data.folds={folds}: {error} Choose fewer folds.") from error
    return parts


def fold_ratios(folds: int, ratios: tuple[float, ...]) -> list[float]:
    """The train, val and test shares of one of `folds` folds, validation carved as `ratios` say."""
    return rest_ratios(1 / folds, ratios)


def rest_ratios(test: float, ratios: tuple[float, ...]) -> list[float]:
    """The train, val and test shares of a split whose test share is `test`, validation carved from
    the rest as the train and val shares of `ratios` say."""
    train, val = ratios[0] / (ratios[0] + ratios[1]), ratios[1] / (ratios[0] + ratios[1])
    rest = 1 - test
    return [rest * train, rest * val, test]


def check_stratifiable(
    labels: np.ndarray, groups: np.ndarray, ratios: tuple[float, ...], class_names: list[str], root: Path
) -> None:
    """UsageError naming the class and counts when a class cannot reach every split."""
    shares = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    needed_splits = int((shares > 0).sum())
    for label, name in enumerate(class_names):
        members = labels == label
        num_images, num_groups = int(members.sum()), len(np.unique(groups[members]))
        if num_groups < needed_splits or num_images * shares[shares > 0].min() < 0.5:
            raise UsageError(
                f"Class '{name}' under {root} has {num_images} images in {num_groups} distinct "
                f"(non-duplicate) groups: too few to stratify into splits {list(ratios)}. "
                "Add images, drop the class with data.classes=[...], or change data.split_ratios."
            )


def log_split_summary(
    labels: np.ndarray,
    groups: np.ndarray,
    splits: np.ndarray,
    ratios: list[float] | None,
    class_names: list[str],
) -> None:
    """Log the groups and per-class images of each split; with `ratios` (a split made here), warn when
    a split's size is off its target share by more than 2 points of the total or one image per
    class (whichever is larger)."""
    shares = np.asarray(ratios or [0, 0, 0], dtype=np.float64) / np.sum(ratios or [1])
    tolerance = max(0.02 * len(labels), len(class_names))
    for split, share in zip(SPLITS, shares, strict=True):
        members = splits == split
        counts = np.bincount(labels[members], minlength=len(class_names))
        per_class = ", ".join(f"{name} {count}" for name, count in zip(class_names, counts, strict=True))
        log.info(
            "%s: %d images in %d groups (%s)",
            split,
            members.sum(),
            len(np.unique(groups[members])),
            per_class,
        )
        target = share * len(labels)
        if ratios and abs(members.sum() - target) > tolerance:
            log.warning(
                "The %s split holds %d images, %.0f off its target of %.0f (shares %s by data.split_ratios): "
                "groups too large to share out evenly; fewer groups per split or other ratios may help.",
                split, members.sum(), members.sum() - target, target, [round(float(r), 3) for r in ratios],
            )  # fmt: skip
