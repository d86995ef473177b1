"""Class folders: a data root holds root/<class>/<image>, or train/ and test/ folders of classes."""

from __future__ import annotations

from pathlib import Path


def find_class_names(root: Path, classes: list[str] | None) -> list[str]:
    """Class names: `classes` as given, else the sorted sub-folders of root (or of root/train)."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data root {root} does not exist. Set data.root=PATH to a folder with one "
            "sub-folder of images per class."
        )
    class_root = root / "train" if has_predefined_splits(root) else root
    found = sorted(p.name for p in class_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if not found:
            raise ValueError(f"{class_root} has no class sub-folders (expected root/<class>/<image>).")
        return found
    unknown = sorted(set(classes) - set(found))
    if unknown:
        raise ValueError(f"data.classes names {unknown}, not folders of {class_root} (found {found}).")
    return list(classes)


def has_predefined_splits(root: Path) -> bool:
    """True when root ships its own train/ and test/ folders of classes (as FER2013 does)."""
    return (root / "train").is_dir() and (root / "test").is_dir()
