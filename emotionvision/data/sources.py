"""Data sources: where the labelled images of a data set come from.

A source lists `Sample`s: (path, label, group or None, preset split or None). Training (`data.source`,
a partial the data module calls with `data.root` and `data.class_map`), evaluation and
cross-data-set evaluation all read their images through one. A new source is one `DataSource`
subclass taking (root, class_map, its own options) and one YAML file in conf/data/ naming it:

    defaults:
      - folder
    source:
      _target_: mypackage.MySource
      _partial_: true
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, NamedTuple

from emotionvision.data.demo import generate_demo_dataset
from emotionvision.data.folders import checked_class_map, class_files, class_folders, has_predefined_splits
from emotionvision.data.images import SkipReport
from emotionvision.data.manifest import check_split_names, read_table
from emotionvision.errors import UsageError


class Sample(NamedTuple):
    """One image: its file, class name (after the class map), subject group and preset split (None
    where the source gives none)."""

    path: Path
    label: str
    group: str | None = None
    split: str | None = None


class DataSource(ABC):
    """Lists the samples of the data at `root`; `class_map` ({name: class}) renames classes."""

    # the fix for data of a single class, in the words of this source's layout
    layout: ClassVar[str] = ""
    # what `class_map` renames: folders or labels
    renamed: ClassVar[str] = "folder"

    def __init__(self, root: str | Path, class_map: Mapping | None = None) -> None:
        self.root = Path(root).expanduser().resolve()  # absolute paths in the split manifest
        self.class_map = checked_class_map(class_map)

    @property
    def where(self) -> Path:
        """Where the classes are found, for messages."""
        return self.root

    @property
    def presets_splits(self) -> bool:
        """True when the source assigns the split of its images."""
        return False

    @abstractmethod
    def class_names(self) -> list[str]:
        """Every class of the data (after the class map), sorted; UsageError when there is none."""

    @abstractmethod
    def samples(self, report: SkipReport, classes: list[str] | None = None) -> list[Sample]:
        """The samples of `classes` (None: every class), each class given holding one or more; files
        the source itself cannot use (hidden files, broken links) are added to `report`."""

    def pick_classes(self, classes: list[str] | None) -> list[str]:
        """The classes to train on: `classes` as given (after the class map), else every class; a
        UsageError names the fix for fewer than two or for names the data lack."""
        found = self.class_names()
        if classes is None:
            if len(found) == 1:
                raise UsageError(
                    f"{self.where} has one class ({found[0]}): a classifier needs two or more. {self.layout}"
                )
            return found
        unknown = sorted(set(classes) - set(found))
        if unknown:
            renamed = " after data.class_map" if self.class_map else ""
            raise UsageError(
                f"data.classes names {unknown}, not classes of {self.where}{renamed} (found {found}): fix "
                f"data.classes, or map {self.renamed}s to those names with "
                f"data.class_map={{{self.renamed}: class}}."
            )
        if len(classes) < 2:
            raise UsageError(
                f"data.classes={list(classes)} names fewer than two classes: a classifier needs two or "
                f"more; list two or more of {found}."
            )
        return list(classes)


class FolderSource(DataSource):
    """A class-per-folder tree, root/<class>/<image> (files in nested folders belong to the class), or
    root/train/<class>/ and root/test/<class>/ (as FER2013 ships it): those folders preset the train
    and test splits. The class map renames folders; several folders may map to one class."""

    layout = "Point data.root at a folder with a sub-folder of images per class (root/<class>/<image>)."

    def __init__(self, root: str | Path, class_map: Mapping | None = None) -> None:
        super().__init__(root, class_map)
        if not self.root.is_dir():
            raise UsageError(
                f"Data root {self.root} does not exist. Set data.root=PATH to a folder with one "
                "sub-folder of images per class."
            )

    @property
    def presets_splits(self) -> bool:
        return has_predefined_splits(self.root)

    @property
    def where(self) -> Path:
        return self.root / "train" if self.presets_splits else self.root

    def class_names(self) -> list[str]:
        found = list(class_folders(self.where, self.class_map, warn=True))
        if not found:
            raise UsageError(f"{self.where} has no class sub-folders (expected root/<class>/<image>).")
        return found

    def samples(self, report: SkipReport, classes: list[str] | None = None) -> list[Sample]:
        parts = [(self.root / "train", "train"), (self.root / "test", "test")]
        samples = []
        for folder, split in parts if self.presets_splits else [(self.root, None)]:
            for name, files in class_files(folder, report, self.class_map, classes).items():
                if not files and classes is not None:
                    dirs = class_folders(folder, self.class_map).get(name, [folder / name])
                    raise UsageError(
                        f"Class folder {', '.join(map(str, dirs))} holds no files: add images, or pick "
                        "the classes to train on with data.classes."
                    )
                samples += [Sample(path, name, None, split) for path in files]
        return samples


class ManifestSource(DataSource):
    """A CSV file listing the images, one per row: columns `path` and `label`, optionally `group` (the
    subject: kept in one split, and the unit data.folds=loso leaves out) and `split` (train, val or
    test: a preset split; without val rows, validation is carved from train). A column is given for
    every row or left empty in all. Relative paths are read from the CSV's folder. The class map
    renames labels. A run's split.csv is such a file. `split`: only the rows of that split."""

    layout = "List images of two or more classes in its label column."
    renamed = "label"

    def __init__(self, path: str | Path, class_map: Mapping | None = None, split: str | None = None) -> None:
        super().__init__(path, class_map)
        self.split = split
        self.rows = self._read()

    @property
    def presets_splits(self) -> bool:
        return self.rows[0].split is not None

    def class_names(self) -> list[str]:
        return sorted({row.label for row in self.rows})

    def samples(self, report: SkipReport, classes: list[str] | None = None) -> list[Sample]:
        chosen = [row for row in self.rows if classes is None or row.label in classes]
        missing = [row.path for row in chosen if not row.path.is_file()]
        if missing:
            raise UsageError(
                f"{len(missing)} of the {len(chosen)} images listed in {self.root} are missing, e.g. "
                f"{missing[0]}: restore them, or correct the file (relative paths are read from its folder)."
            )
        return chosen

    def _read(self) -> list[Sample]:
        """The rows as samples, checked; only those of `split` where it is set."""
        rows = read_table(self.root, ("path", "label"), "manifest")
        samples = [self._sample(row, line) for line, row in enumerate(rows, start=2)]
        for column in ("group", "split"):
            given = [getattr(sample, column) is not None for sample in samples]
            if any(given) and not all(given):
                raise UsageError(
                    f"{self.root} line {given.index(False) + 2}: no {column}; give every row a {column}, "
                    "or none."
                )
        check_split_names(self.root, [sample.split for sample in samples])
        repeated = [path for path, count in Counter(sample.path for sample in samples).items() if count > 1]
        if repeated:
            raise UsageError(f"{self.root} lists {repeated[0]} more than once: list each image once.")
        return self._of_split(samples)

    def _sample(self, row: dict[str, str], line: int) -> Sample:
        if not row["path"] or not row["label"]:
            raise UsageError(f"{self.root} line {line}: a row needs a path and a label.")
        path = Path(row["path"])
        label = self.class_map.get(row["label"], row["label"])
        return Sample(path if path.is_absolute() else self.root.parent / path, label, *_cells(row))

    def _of_split(self, samples: list[Sample]) -> list[Sample]:
        """The samples of `split` (all where it is None); UsageError when none is left."""
        if self.split is not None:
            if samples and samples[0].split is None:
                raise UsageError(f"{self.root} has no split column to take split '{self.split}' from.")
            samples = [sample for sample in samples if sample.split == self.split]
        if not samples:
            in_split = f" in split '{self.split}' (data.split)" if self.split else ""
            raise UsageError(f"Manifest {self.root} lists no images{in_split}.")
        return samples


def _cells(row: dict[str, str]) -> tuple[str | None, str | None]:
    """A row's group and split; None where the column is missing or the cell empty."""
    return row.get("group") or None, row.get("split") or None


class DemoSource(FolderSource):
    """The drawn-faces demo set (`data=demo`), generated into `root` on first use (see
    `generate_demo_dataset`); `subjects`: that many people, drawn alike in every class."""

    def __init__(
        self, root: str | Path, class_map: Mapping | None = None, subjects: int | None = None
    ) -> None:
        try:
            generate_demo_dataset(root, subjects=subjects)
        except FileExistsError as error:
            raise UsageError(
                f"data.root={root} holds files but no demo set, and data=demo (the default) draws its demo "
                f"set there; for your own images use data=folder data.root={root}."
            ) from error
        super().__init__(root, class_map)
