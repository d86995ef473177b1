"""Statistics for small studies: binomial intervals and paired comparisons over seeds or folds (scipy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. accuracy: correct predictions of test images)."""
    interval = stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of `treatment - reference` over paired runs, its bootstrap interval and paired tests.

    Values are nan where they are undefined (fewer than two pairs, or all differences equal).
    `corrected_t_pvalue` (cross-validation folds) is Nadeau and Bengio's corrected resampled t-test,
    which widens the paired t-test for the training images that folds share; it then decides
    significance.
    """

    metric: str
    reference: str
    treatment: str
    pairs: int
    mean: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float
    confidence: float
    unit: str = "seeds"
    corrected_t_pvalue: float = float("nan")

    @property
    def corrected(self) -> bool:
        """True where the corrected resampled t-test applies (cross-validation folds)."""
        return not np.isnan(self.corrected_t_pvalue)

    @property
    def deciding_pvalue(self) -> float:
        """The corrected resampled t-test's p-value where there is one, else the paired t-test's."""
        return self.corrected_t_pvalue if self.corrected else self.t_pvalue

    @property
    def significant(self) -> bool:
        """True when the deciding test rejects 'no difference' at 1 - confidence."""
        return bool(self.deciding_pvalue < 1 - self.confidence)

    def sentence(self) -> str:
        """A plain statement of the difference, its interval and whether it is significant."""
        change = f"{self.metric} of {self.treatment} minus {self.reference}: {self.mean:+.4f}"
        if self.pairs < 2:
            return f"{change} from {self.pairs} pair: at least two paired {self.unit} are needed for a test."
        if np.isnan(self.t_pvalue):
            return f"{change} in each of {self.pairs} paired {self.unit}: with no spread, no test applies."
        level = f"{1 - self.confidence:.0%}"
        verdict = "significant" if self.significant else "not significant"
        test = "corrected resampled t-test" if self.corrected else "paired t-test"
        return (
            f"{change} over {self.pairs} paired {self.unit} ({self.confidence:.0%} bootstrap CI "
            f"{self.ci_low:+.4f} to {self.ci_high:+.4f}; {test} p = {self.deciding_pvalue:.3g}): "
            f"the difference is {verdict} at the {level} level."
        )


def paired_difference(
    metric: str,
    reference: str,
    treatment: str,
    reference_values: np.ndarray,
    treatment_values: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    unit: str = "seeds",
    test_train_ratio: float | None = None,
) -> PairedDifference:
    """Compare two variants run in pairs (values in pair order, one per pair: seeds, or folds of a
    cross-validation, named by `unit`). `test_train_ratio` (test over training images of a fold) adds
    the corrected resampled t-test of cross-validation folds."""
    differences = np.asarray(treatment_values, dtype=float) - np.asarray(reference_values, dtype=float)
    ci_low = ci_high = t_pvalue = wilcoxon_pvalue = corrected_t_pvalue = float("nan")
    if len(differences) >= 2 and np.ptp(differences) > 0:
        interval = stats.bootstrap(
            (differences,), np.mean, confidence_level=confidence, method="percentile", rng=seed
        ).confidence_interval
        ci_low, ci_high = float(interval.low), float(interval.high)
        t_pvalue = float(stats.ttest_rel(treatment_values, reference_values).pvalue)
        wilcoxon_pvalue = float(stats.wilcoxon(differences).pvalue)
        if test_train_ratio is not None:
            corrected_t_pvalue = corrected_resampled_t_pvalue(differences, test_train_ratio)
    return PairedDifference(
        metric,
        reference,
        treatment,
        len(differences),
        float(differences.mean()) if len(differences) else float("nan"),
        ci_low,
        ci_high,
        t_pvalue,
        wilcoxon_pvalue,
        confidence,
        unit,
        corrected_t_pvalue,
    )


def corrected_resampled_t_pvalue(differences: np.ndarray, test_train_ratio: float) -> float:
    """Two-sided p of Nadeau and Bengio's (2003) corrected resampled t-test: the paired t statistic with
    the variance of the mean taken as (1/J + n_test/n_train) times the variance of the J differences."""
    variance = (1 / len(differences) + test_train_ratio) * np.var(differences, ddof=1)
    statistic = np.mean(differences) / np.sqrt(variance)
    return float(2 * stats.t.sf(abs(statistic), df=len(differences) - 1))
