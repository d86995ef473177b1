"""`emotionvision-compare`: tables, paired statistics, figure and TensorBoard of a sweep."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emotionvision.cli.compare import main as compare_main
from emotionvision.reporting.comparison import compare, summary_figure
from emotionvision.reporting.scores import chance_levels
from emotionvision.reporting.statistics import paired_difference
from emotionvision.reporting.sweep_runs import assign_variants, load_runs, swept_keys

BIN = Path(sys.executable).parent
CLASSES = ["anger", "happy", "sad"]


def write_run(
    run_dir: Path,
    overrides: list[str],
    seed: int,
    acc: float,
    split: str = "a,b,test,0\n",
    fold: int | None = None,
) -> None:
    """A finished run as emotionvision-train leaves it (only the files compare reads); `fold`: a
    cross-validation fold's run."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra/config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"fold": fold}}))
    (run_dir / "split.csv").write_text("path,label,split,group\n" + split)
    metrics = {"test/acc": acc, "test/macro_f1": acc - 0.05, "test/auroc": acc + 0.1}
    metrics |= {f"test/recall/{name}": acc for name in CLASSES}
    metrics |= {f"test/support/{name}": count for name, count in zip(CLASSES, (50, 50, 72), strict=True)}
    metrics["test/confusion_matrix"] = [[50, 0], [0, 122]]  # 172 test images
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def write_sweep(root: Path, gains: list[float], base: list[float] | None = None) -> Path:
    """augmentation=none,standard x seeds 1..N; standard scores base + gain per seed."""
    base = base or [0.55, 0.58, 0.57, 0.60, 0.56][: len(gains)]
    job = 0
    for variant, offsets in (("none", [0.0] * len(gains)), ("standard", gains)):
        for seed, (value, offset) in enumerate(zip(base, offsets, strict=True), start=1):
            overrides = [f"augmentation={variant}", f"seed={seed}", "experiment=compare_augmentation"]
            write_run(root / str(job), overrides, seed, value + offset)
            job += 1
    return root


def test_swept_keys_leave_out_seed_and_constant_overrides(tmp_path: Path) -> None:
    runs = load_runs([write_sweep(tmp_path / "sweep", [0.01] * 3)])
    assert swept_keys(runs) == ["augmentation"]
    assert [run.seed for run in runs] == [1, 2, 3, 1, 2, 3]


def test_jobs_are_read_in_numeric_order(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job in range(12):
        write_run(sweep / str(job), [f"optimizer.lr={job}e-4"], seed=0, acc=0.5)
    assert [run.path.name for run in load_runs([sweep])] == [str(job) for job in range(12)]


def test_consistent_gain_is_significant(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", [0.030, 0.025, 0.035, 0.028, 0.032])
    report = compare([sweep], tmp_path / "out")
    assert "| augmentation=none | 5 | 0.572 ± 0.019 |" in report
    assert "test/acc of augmentation=standard minus augmentation=none: +0.0300 over 5 paired seeds" in report
    assert "the difference is significant at the 5% level" in report
    assert "with 5 pairs its smallest two-sided p is 0.0625, so it cannot reach 5% on its own" in report
    with (tmp_path / "out/paired.csv").open() as handle:
        acc = next(row for row in csv.DictReader(handle) if row["metric"] == "test/acc")
    assert float(acc["ci_low"]) > 0.02 and float(acc["ci_high"]) < 0.04
    assert float(acc["t_pvalue"]) < 0.001
    assert float(acc["wilcoxon_pvalue"]) == pytest.approx(0.0625)  # its floor with 5 pairs


def test_gain_within_seed_noise_is_not_significant(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", [0.04, -0.03, 0.02, -0.035, 0.011])
    report = compare([sweep], tmp_path / "out")
    assert "test/acc of augmentation=standard minus augmentation=none: +0.0012" in report
    assert "not significant at the 5% level" in report
    # the original study's 57.8% vs 58.4% on 172 images: test-set noise alone spans ~15 points
    assert "on 172 test images has a 95% Wilson interval of" in report
    assert "Every run used the same split" in report


def test_outputs_table_csv_figure_and_tensorboard_hparams(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", [0.01, 0.02, 0.0])
    compare([sweep], tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {
        "compare.md",
        "summary.csv",
        "paired.csv",
        "runs.csv",
        "compare.png",
    }
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["variant"] for row in rows] == ["augmentation=none", "augmentation=standard"]
    assert float(rows[1]["test/acc mean"]) == pytest.approx(np.mean([0.56, 0.60, 0.57]))
    assert "test/recall/sad std" in rows[0]
    run_logs = sorted(p for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert [p.name for p in run_logs] == [str(job) for job in range(6)]
    events = EventAccumulator(str(run_logs[0]))
    events.Reload()
    assert events.PluginTagToContent("hparams")  # the HParams tab's session data
    assert "test/acc" in events.Tags()["scalars"]


def test_summary_figure_draws_each_metrics_chance_line(tmp_path: Path) -> None:
    runs = load_runs([write_sweep(tmp_path / "sweep", [0.01, 0.02])])
    figure = summary_figure(runs, assign_variants(runs, swept_keys(runs)))
    levels = chance_levels([50, 50, 72])
    for axes, name in zip(figure.axes, ("acc", "macro_f1", "auroc"), strict=True):
        (line,) = [line for line in axes.get_lines() if line.get_label().startswith("chance")]
        assert line.get_ydata()[0] == pytest.approx(levels[name])
        (label,) = [text.get_text() for text in axes.get_legend().get_texts()]
        assert label == f"chance {levels[name]:.2f}: a uniform random\nguess among 3 classes"


def test_runs_on_different_splits_are_flagged(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", [0.01, 0.02])
    (sweep / "3/split.csv").write_text("path,label,split,group\nother,b,test,0\n")
    assert "WARNING: the runs do not share one split" in compare([sweep], tmp_path / "out")


def test_paired_difference_without_pairs_says_so() -> None:
    single = paired_difference("test/acc", "a", "b", np.array([0.5]), np.array([0.6]))
    assert "at least two paired seeds are needed" in single.sentence()
    same = paired_difference("test/acc", "a", "b", np.array([0.5, 0.6]), np.array([0.5, 0.6]))
    assert not same.significant and "no test applies" in same.sentence()


def test_clear_errors_for_bad_input(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path / "missing")])
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path)])
    assert "No finished runs under" in capsys.readouterr().err
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["seed=1"], seed=1, acc=0.5)
    write_run(sweep / "1", ["seed=1"], seed=1, acc=0.6)
    with pytest.raises(SystemExit):
        compare_main([str(sweep)])
    assert "with the same seed 1" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_augmentation_sweep_end_to_end(
    tmp_path: Path, make_tree, capsys, quick_run_overrides
) -> None:
    """The experiment's sweep (2 variants x 2 seeds, shortened), then emotionvision-compare."""
    root = make_tree(tmp_path / "images", dict.fromkeys(CLASSES, 10))
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    sweep_command = [
        str(BIN / "emotionvision-train"),
        "-m",
        "experiment=compare_augmentation",
        "seed=1,2",
        f"data.root={root}",
        *quick_run_overrides,
        "callbacks=none",
        "++trainer.enable_checkpointing=false",
    ]
    result = subprocess.run(sweep_command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep,) = (tmp_path / "logs/compare_augmentation/multiruns").iterdir()
    splits = {(run / "split.csv").read_text() for run in sweep.iterdir() if run.is_dir()}
    assert len(splits) == 1  # every run used the same split
    compare_main([str(sweep)])
    printed = capsys.readouterr().out
    assert "| augmentation=none | 2 |" in printed
    assert "| augmentation=standard | 2 |" in printed
    assert "over 2 paired seeds" in printed
    assert (sweep / "compare/compare.png").stat().st_size > 10_000


def test_two_cross_validations_are_paired_fold_by_fold(tmp_path: Path) -> None:
    """Two sweeps of data.folds=4 (one with augmentation=standard): each fold's runs share its split,
    and the differences pair fold k of one with fold k of the other."""
    base = [0.50, 0.58, 0.54, 0.61]
    for sweep, extra, gains in (
        ("plain", [], [0.0] * 4),
        ("augmented", ["augmentation=standard"], [0.02, 0.04, 0.03, 0.03]),
    ):
        for fold, (value, gain) in enumerate(zip(base, gains, strict=True)):
            overrides = ["data.folds=4", f"data.fold={fold}", *extra]
            split = f"a,b,test,{fold}\n" + "".join(f"t{i},b,train,{i}\n" for i in range(516))
            write_run(tmp_path / sweep / f"fold{fold}", overrides, 0, value + gain, split, fold)
    report = compare([tmp_path / "plain", tmp_path / "augmented"], tmp_path / "out")
    assert "| augmentation=standard | 4 |" in report and "Mean ± standard deviation over folds" in report
    assert (
        "test/acc of augmentation=standard minus augmentation=(default): +0.0300 over 4 paired folds"
        in report
    )
    assert "Each fold's runs used the same split (4 folds, 688 test images in all)" in report
    assert "Runs are paired fold by fold" in report
    # Nadeau and Bengio: variance of the mean (1/J + n_test/n_train) s^2; 172 test, 516 training images
    differences = np.array([0.02, 0.04, 0.03, 0.03])
    statistic = differences.mean() / np.sqrt((1 / 4 + 172 / 516) * differences.var(ddof=1))
    expected = 2 * stats.t.sf(statistic, df=3)
    assert f"corrected resampled t-test p = {expected:.3g}): the difference is significant" in report
    assert "The corrected resampled t-test decides significance" in report
    assert "(with 4 pairs its smallest two-sided p is 0.125, so it cannot reach 5% on its own)" in report


def test_path_values_are_labelled_by_what_differs(tmp_path: Path) -> None:
    """A sweep over checkpoints: each variant is named by its path after the folders they share."""
    pretrained = tmp_path / "logs/fer2013_pretrain/runs"
    inits = [pretrained / name / "checkpoints/best.ckpt" for name in ("first", "second")]
    for job, (init, seed) in enumerate((init, seed) for init in inits for seed in (1, 2)):
        write_run(tmp_path / "sweep" / str(job), [f"model.init_from={init}", f"seed={seed}"], seed, 0.5)
    runs = load_runs([tmp_path / "sweep"])
    assert assign_variants(runs, swept_keys(runs)) == [
        "model.init_from=.../first/checkpoints/best.ckpt",
        "model.init_from=.../second/checkpoints/best.ckpt",
    ]
    assert [run.overrides["model.init_from"] for run in runs[::2]] == [str(init) for init in inits]
