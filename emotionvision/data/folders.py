"""Class folders (`FolderSource`'s listing): a data root holds root/<class>/<image>, or train/ and test/
folders of classes. A class map ({folder: class}) renames folders; several folders may map to one class."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from emotionvision.data.images import SkipReport, list_class_files
from emotionvision.errors import UsageError

log = logging.getLogger(__name__)


def class_folders(
    class_root: Path, class_map: Mapping[str, str] | None = None, warn: bool = False
) -> dict[str, list[Path]]:
    """Class name -> its folders, sorted by class: the sub-folders of `class_root` (hidden ones aside),
    renamed by `class_map` ({folder: class}; folders it does not name keep their names). `warn`: log
    the folders `class_map` names that `class_root` lacks."""
    renames = checked_class_map(class_map)
    folders = sorted(p for p in class_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unused = sorted(set(renames) - {folder.name for folder in folders})
    if unused and warn:
        log.warning("data.class_map names folders %s that %s does not have", unused, class_root)
    by_class: dict[str, list[Path]] = {}
    for folder in folders:
        by_class.setdefault(renames.get(folder.name, folder.name), []).append(folder)
    return dict(sorted(by_class.items()))


def class_files(
    class_root: Path,
    report: SkipReport,
    class_map: Mapping[str, str] | None = None,
    classes: list[str] | None = None,
) -> dict[str, list[Path]]:
    """Class name -> the files of its folders (see `class_folders` and `list_class_files`, which adds
    hidden files and broken links to `report`); only `classes` (empty where missing) where given."""
    folders = class_folders(class_root, class_map)
    return {
        name: [path for folder in folders.get(name, []) for path in list_class_files(folder, report)]
        for name in (folders if classes is None else classes)
    }


def checked_class_map(class_map: Mapping | None) -> dict[str, str]:
    """`class_map` as {folder: class} strings (YAML may read a folder named 1 as a number); UsageError
    for an entry without a class name."""
    renames = {str(folder): name for folder, name in (class_map or {}).items()}
    empty = [folder for folder, name in renames.items() if name is None or str(name).strip() == ""]
    if empty:
        raise UsageError(
            f"data.class_map gives no class name for folders {empty}: write {{folder: class}}; "
            "to leave a folder out, list the classes to keep in data.classes."
        )
    return {folder: str(name) for folder, name in renames.items()}


def has_predefined_splits(root: Path) -> bool:
    """True when root ships its own train/ and test/ folders of classes (as FER2013 does)."""
    return (root / "train").is_dir() and (root / "test").is_dir()
