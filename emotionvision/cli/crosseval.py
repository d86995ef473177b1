"""`emotionvision-crosseval`: every checkpoint (a row, named after its training set) tested on every
data set (a column) on the classes they share. Each cell is an emotionvision-eval run, with its
report in cells/<checkpoint>_on_<tree>/; the matrix goes to crosseval.md, crosseval.csv and
crosseval.png.

The data, evaluation and reporting modules (torch, Lightning, matplotlib) are imported where a cell
uses them, so that `--help` and a config error answer without them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from emotionvision.cli.hydra_compat import share_config_store
from emotionvision.cli.resume import register_resolvers
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.errors import UsageError, check_arguments
from emotionvision.rundir import metric_key

if TYPE_CHECKING:
    from emotionvision.reporting.matrix import CrossCell

log = logging.getLogger(__name__)

TREE_KEYS = {"root", "split_file", "split", "class_map"}
TREE_FORMS = (
    "a folder path, {root: PATH, class_map: {folder: class}}, or a run's split "
    "{split_file: RUN/split.csv, split: test}"
)


def crosseval(cfg: DictConfig) -> list[CrossCell]:
    """Evaluate each of `cfg.checkpoints` on each of `cfg.trees` and write the matrix into
    `cfg.output_dir`; returns its cells, row by row."""
    from emotionvision.reporting.matrix import write_crosseval

    checkpoints = _named(cfg.checkpoints, "checkpoints", "checkpoints={ckplus: RUN/checkpoints/best.ckpt}")
    trees = {name: tree_spec(name, spec) for name, spec in _named(cfg.trees, "trees", TREE_FORMS).items()}
    _check_exist({f"checkpoints.{name}": path for name, path in checkpoints.items()})
    _check_exist({f"trees.{name}": tree.get("root") or tree["split_file"] for name, tree in trees.items()})
    output_dir = Path(cfg.output_dir)
    cells = [
        evaluate_cell(cfg, train, Path(checkpoint), test, tree, output_dir)
        for train, checkpoint in checkpoints.items()
        for test, tree in trees.items()
    ]
    print(write_crosseval(cells, list(checkpoints), list(trees), output_dir))
    log.info("Cross-data-set matrix written to %s (crosseval.md, crosseval.csv, crosseval.png)", output_dir)
    return cells


def _named(node: DictConfig | None, key: str, example: str) -> dict:
    """The name: value entries of `key`; UsageError when there are none."""
    if not isinstance(node, DictConfig) or not node:
        raise UsageError(f"{key}: give one or more as name: value, e.g. {example}.")
    return {str(name): value for name, value in node.items()}


def _check_exist(paths: dict[str, str]) -> None:
    """UsageError naming the options whose path does not exist (before any cell runs)."""
    missing = [f"{key}={path}" for key, path in paths.items() if not Path(str(path)).exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder; fix the path.")


def tree_spec(name: str, spec: str | DictConfig) -> dict:
    """The eval data keys (root or split_file, split, class_map) of the `trees` entry `name`."""
    if isinstance(spec, str):
        return {"root": spec}
    values = OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else None
    if not values or set(values) - TREE_KEYS or bool(values.get("root")) == bool(values.get("split_file")):
        raise UsageError(f"trees.{name}={spec}: give {TREE_FORMS}.")
    return values


def cell_config(cfg: DictConfig, checkpoint: Path, tree: dict, output_dir: Path) -> DictConfig:
    """The emotionvision-eval config of one cell: the tree's class map over `data.class_map`."""
    from emotionvision.data.folders import checked_class_map

    data = {
        "root": tree.get("root"),
        "split_file": tree.get("split_file"),
        "split": tree.get("split", cfg.data.split),
    }
    cell = {"ckpt_path": str(checkpoint), "run_dir": None, "output_dir": str(output_dir), "data": data}
    merged = OmegaConf.merge(cfg, cell)
    class_map = checked_class_map(cfg.data.class_map) | checked_class_map(tree.get("class_map"))
    merged.data.class_map = class_map or None  # replaced, not merged: struct configs take no new keys
    return merged


def evaluate_cell(
    cfg: DictConfig, train: str, checkpoint: Path, test: str, tree: dict, output_dir: Path
) -> CrossCell:
    """The cell of `checkpoint` (row `train`) on `tree` (column `test`), its report in `output_dir`/
    cells/<train>_on_<test>; empty when they share no class."""
    from emotionvision.evaluation import NoSharedClassError, evaluate
    from emotionvision.reporting.matrix import CrossCell

    log.info("Cross-data-set cell: %s on %s", train, test)
    report = f"cells/{train}_on_{test}"
    try:
        metrics = evaluate(cell_config(cfg, checkpoint, tree, output_dir / report))
    except NoSharedClassError as error:
        log.warning("%s on %s: %s", train, test, error)
        return CrossCell(train, test, note="no shared class")
    split = metrics["split"]
    return CrossCell(
        train,
        test,
        acc=metrics[metric_key(split, "acc")],
        macro_f1=metrics[metric_key(split, "macro_f1")],
        num_images=metrics["num_images"],
        shared_classes=metrics["classes_evaluated"],
        skipped_classes=metrics["classes_skipped"],
        seen=metrics["seen_in_training"],
        report=report,
    )


# the resolvers of conf/hydra/default.yaml, before Hydra composes
register_resolvers()
share_config_store()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="crosseval")
@reports_usage_errors("emotionvision-crosseval")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    check_arguments(cfg.trainer, "trainer")
    crosseval(cfg)


if __name__ == "__main__":
    main()
