"""Paired comparison of two reenactment reports (`otavatar train evaluate --json-out`) on the same pairs.

Two models scored on the same (source, driver) pairs share each pair's difficulty: a portrait that inverts badly
costs both. Comparing per-pair differences removes that shared part, so the noise of "A's mean minus B's mean" is
the spread of the per-pair differences, not of the scores. For each metric this module reports the mean of
(A - B) over pairs, its standard error (sample standard deviation of the differences / sqrt(pairs)), z = mean / SE,
and in how many pairs A is the better one. |z| >= 1.96 is called a difference (a two-sided 95% normal test: with
10-20 pairs a t test would ask for 2.1-2.3, so treat 1.96 <= |z| < 2.3 as weak).

    a, b = json.load(open("a.json")), json.load(open("b.json"))
    for row in compare_reports(a, b):
        print(row.metric, row.difference, row.standard_error, row.verdict)

Two training runs that differ only in their seed give two models of one recipe. `average_reports` averages their
reports pair by pair, so `compare_reports(average_reports([a0, a1]), average_reports([b0, b1]))` compares two
recipes with each pair's difference averaged over the seeds (the SE is still over the pairs: it measures the pairs'
noise, not the seeds'; with two seeds, also read each seed's comparison on its own).

`compare_across_seeds` asks the other question, whether one recipe beats another *across training seeds*: each
seed trains a matched pair (A_i, B_i); its paired difference over the evaluation pairs is one sample, and the test
is a one-sample t test of those per-seed differences (SE = their standard deviation / sqrt(seeds), the Student t
critical value for seeds - 1 degrees of freedom: 12.7 for 2 seeds, 4.3 for 3, 3.2 for 4). It needs at least 2
seeds and calls a difference only when the seeds agree on it by more than they scatter.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from otavatar.training.evaluate import json_safe
from otavatar.training.metrics import LANDMARK_REGIONS, region_means

__all__ = ["MetricDifference", "SeedDifference", "average_reports", "compare_across_seeds", "compare_reports",
           "comparison_table", "report_means", "seed_comparison_table", "METRICS", "Z_95"]

# metric -> higher is better. "aed_readable" is per pair the mean of aed_controls over the report's readable
# controls (with equal frames per pair that is what the report's pooled aed_readable averages); "akd_<region>"
# is the mean of akd_landmarks over that region (reports written before akd_landmarks existed have none), and
# "akd_detected_<region>" that of akd_detected_landmarks (round 15 on; earlier reports lack the detected metrics),
# "akd_aligned_<region>" that of akd_aligned_landmarks (round 19 on).
_LANDMARK_COLUMNS = {"akd": "akd_landmarks", "akd_detected": "akd_detected_landmarks",
                     "akd_aligned": "akd_aligned_landmarks"}     # whole-face metric -> its per-landmark column
_REGIONAL: dict[str, tuple[str, str]] = {f"{metric}_{region}": (column, region)
                                         for metric, column in _LANDMARK_COLUMNS.items() for region in LANDMARK_REGIONS}
METRICS: dict[str, bool] = {"psnr": True, "ssim": True, "akd": False, "aed": False, "aed_readable": False,
                            **{f"akd_{region}": False for region in LANDMARK_REGIONS},
                            "akd_detected": False, "aed_detected": False,
                            **{f"akd_detected_{region}": False for region in LANDMARK_REGIONS},
                            "akd_aligned": False, **{f"akd_aligned_{region}": False for region in LANDMARK_REGIONS}}
# what a report must hold, in every pair, to give a metric (beyond the whole-report fields)
_NEEDS: dict[str, str] = {**{m: column for m, (column, _) in _REGIONAL.items()},
                          "akd_detected": "akd_detected_landmarks", "aed_detected": "aed_detected_controls",
                          "akd_aligned": "akd_aligned_landmarks"}
Z_95 = 1.96


def _ratio(difference: float, standard_error: float) -> float:
    """difference / SE: NaN without an SE, +-inf for a nonzero difference with SE 0 (every sample equal)."""
    if not math.isfinite(standard_error):
        return math.nan
    if standard_error == 0.0:
        return 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    return difference / standard_error


def _verdict(ratio: float, critical: float, higher_is_better: bool) -> str:
    """'A better', 'B better' or 'within noise' (|ratio| below critical, or NaN)."""
    if not abs(ratio) >= critical:      # also NaN
        return "within noise"
    return "A better" if (ratio > 0) == higher_is_better else "B better"


def _differences(diff: np.ndarray, higher_is_better: bool) -> tuple[float, float, int]:
    """(mean, its SE = sample std / sqrt(n), how many samples favour A) of A - B samples; SE NaN for one sample or
    any non-finite one."""
    n = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 and np.all(np.isfinite(diff)) else math.nan
    a_better = int(np.sum(diff > 0) if higher_is_better else np.sum(diff < 0))
    return float(diff.mean()), se, a_better


@dataclass(frozen=True)
class MetricDifference:
    metric: str
    mean_a: float
    mean_b: float
    difference: float          # mean over pairs of (A - B), in the metric's units
    standard_error: float      # of `difference`, paired (NaN with one pair)
    a_better: int              # pairs where A beats B (ties count for neither)
    pairs: int
    higher_is_better: bool

    @property
    def z(self) -> float:
        return _ratio(self.difference, self.standard_error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, with z and the verdict; non-finite numbers as "inf" / "-inf" / "nan" (as reports write)."""
        return json_safe({**asdict(self), "z": self.z, "verdict": self.verdict})

    @property
    def verdict(self) -> str:
        """'A better', 'B better' or 'within noise' (|z| < 1.96)."""
        return _verdict(self.z, Z_95, self.higher_is_better)


@dataclass(frozen=True)
class SeedDifference:
    """One metric of recipe A against recipe B over matched training seeds (A_i against B_i)."""
    metric: str
    per_seed: tuple[float, ...]    # each seed's mean over evaluation pairs of (A_i - B_i)
    difference: float              # mean of per_seed
    standard_error: float          # sample std of per_seed / sqrt(seeds); NaN with one seed
    critical_t: float              # two-sided 95% Student t for seeds - 1 degrees of freedom; NaN with one seed
    a_better_seeds: int            # seeds whose A beats their B (ties count for neither)
    higher_is_better: bool

    @property
    def seeds(self) -> int:
        return len(self.per_seed)

    @property
    def t(self) -> float:
        return _ratio(self.difference, self.standard_error)

    @property
    def verdict(self) -> str:
        """'A better', 'B better' or 'within noise' (|t| below the critical value, or one seed)."""
        return _verdict(self.t, self.critical_t, self.higher_is_better)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "per_seed": list(self.per_seed), "seeds": self.seeds, "t": self.t,
                          "verdict": self.verdict})


def _per_pair(report: Mapping[str, Any], metric: str, readable_index: Sequence[int]) -> dict[tuple[str, str], float]:
    out = {}
    for p in report["pairs"]:
        key = (str(p["source"]), str(p["driver"]))
        if metric in _NEEDS and not p.get(_NEEDS[metric]):
            raise ValueError(f"{metric} needs {_NEEDS[metric]}, which this report lacks")
        if metric in _REGIONAL:
            column, region = _REGIONAL[metric]
            out[key] = region_means(p[column])[region]
        elif metric == "aed_readable":
            out[key] = float(np.mean([p["aed_controls"][i] for i in readable_index])) if readable_index else math.nan
        else:
            out[key] = float(p[metric])     # to_dict writes infinite PSNR as "inf": float() reads it
    return out


def _pair_keys(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(p["source"]), str(p["driver"])) for p in report["pairs"]]


def _matching_pair_keys(reports: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The first report's (source, driver) keys, once every report (name -> report) is known to hold pairs, each
    once, the same pairs, frames and resolution as the first: pair difficulty must not leak into a difference or an
    average. ValueError naming what differs otherwise."""
    for name, r in reports.items():
        if not isinstance(r, Mapping) or "pairs" not in r or not r["pairs"]:
            raise ValueError(f"report {name} has no pairs (expected the JSON of `otavatar train evaluate --json-out`)")
    (first, reference), *others = reports.items()
    for name, r in others:
        for field in ("frames", "resolution"):
            if r.get(field) != reference.get(field):
                raise ValueError(f"the reports differ in {field}: {first} {reference.get(field)!r}, "
                                 f"{name} {r.get(field)!r}")
    keys = {name: _pair_keys(r) for name, r in reports.items()}
    for name, k in keys.items():
        if len(set(k)) != len(k):
            raise ValueError(f"report {name} lists a (source, driver) pair twice")
    for name, _ in others:
        only_first, only_other = sorted(set(keys[first]) - set(keys[name])), sorted(set(keys[name]) - set(keys[first]))
        if only_first or only_other:
            raise ValueError(f"the reports are on different pairs: only in {first} {only_first[:3]}, only in {name} "
                             f"{only_other[:3]} ({len(only_first)} and {len(only_other)} in all)")
    return keys[first]


def _checked_metrics(reports: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None) -> list[str]:
    """metrics, or with None every metric all `reports` can give (the regional AKDs only where every pair holds
    the landmark column); ValueError for an unknown one."""
    if metrics is None:
        metrics = [m for m in METRICS
                   if m not in _NEEDS or all(p.get(_NEEDS[m]) for r in reports for p in r["pairs"])]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return list(metrics)


def _readable_controls(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """The controls every report reads. They are chosen from the ground truth alone, so the same pairs give the
    same list; if two probe versions disagree, compare on the controls all of them read."""
    return [c for c in reports[0].get("readable_controls", [])
            if all(c in r.get("readable_controls", []) for r in reports[1:])]


def _readable_index(reports: Sequence[Mapping[str, Any]]) -> list[int]:
    from otavatar.synthetic.params import CONTROLS

    return [CONTROLS.index(c) for c in _readable_controls(reports)]


def report_means(report: Mapping[str, Any], metrics: Sequence[str] | None = None) -> dict[str, float]:
    """Each metric's mean over the report's pairs, per pair as compare_reports reads it (metrics: None = every
    metric the report gives)."""
    readable_index = _readable_index([report])
    return {m: float(np.mean(list(_per_pair(report, m, readable_index).values())))
            for m in _checked_metrics([report], metrics)}


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any],
                    metrics: Sequence[str] | None = None) -> list[MetricDifference]:
    """One MetricDifference per metric for report A against report B (dicts as written by --json-out).

    metrics: None = every metric both reports can give (the regional AKDs only when both hold akd_landmarks).

    Both must hold the same (source, driver) pairs, the same frames per pair and the same resolution; otherwise
    the comparison would mix pair difficulty into the difference, so it raises ValueError naming what differs.
    """
    keys_a = _matching_pair_keys({"A": a, "B": b})
    metrics = _checked_metrics([a, b], metrics)
    readable_index = _readable_index([a, b])
    rows = []
    for metric in metrics:
        va, vb = _per_pair(a, metric, readable_index), _per_pair(b, metric, readable_index)
        xa = np.array([va[k] for k in keys_a])
        xb = np.array([vb[k] for k in keys_a])
        higher = METRICS[metric]
        difference, se, a_better = _differences(xa - xb, higher)
        rows.append(MetricDifference(metric=metric, mean_a=float(xa.mean()), mean_b=float(xb.mean()),
                                     difference=difference, standard_error=se, a_better=a_better,
                                     pairs=len(xa), higher_is_better=higher))
    return rows


# per-pair fields the average keeps
_AVERAGED = ("psnr", "ssim", "akd", "aed", "aed_controls", "akd_landmarks", "akd_detected", "aed_detected",
             "akd_detected_landmarks", "aed_detected_controls", "akd_aligned", "akd_aligned_landmarks")


def average_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report whose every pair holds the mean over `reports` (e.g. one per training seed) of that pair's
    PSNR, SSIM, AKD, AED and per-control / per-landmark lists. The reports must be on the same pairs, frames and
    resolution (ValueError otherwise, as in compare_reports); readable controls are those all of them read."""
    if not reports:
        raise ValueError("no reports to average")
    keys = _matching_pair_keys({str(i + 1): r for i, r in enumerate(reports)})
    first = reports[0]
    by_key = [dict(zip(_pair_keys(r), r["pairs"])) for r in reports]
    pairs = []
    for key in keys:
        rows = [pairs_of[key] for pairs_of in by_key]
        pair = {"source": key[0], "driver": key[1], "frames": rows[0].get("frames")}
        for name in _AVERAGED:
            if all(name in row and row[name] is not None for row in rows):
                values = np.array([np.asarray(row[name], dtype=float) for row in rows])
                mean = values.mean(0)
                pair[name] = mean.tolist() if mean.ndim else float(mean)
        pairs.append(pair)
    readable = _readable_controls(reports)
    return {"frames": first.get("frames"), "resolution": first.get("resolution"), "pairs": pairs,
            "readable_controls": readable, "averaged_reports": len(reports)}


def compare_across_seeds(seed_pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                         metrics: Sequence[str] | None = None) -> list[SeedDifference]:
    """One SeedDifference per metric, from one (report A_i, report B_i) tuple per training seed i.

    Each tuple is compared as in compare_reports (same pairs, frames, resolution, or ValueError); metrics: None =
    those every seed's comparison gives. ValueError when seed_pairs is empty."""
    if not seed_pairs:
        raise ValueError("no seeds to compare: give one (A report, B report) tuple per training seed")
    by_seed = []
    for i, pair in enumerate(seed_pairs):
        if len(pair) != 2:
            raise ValueError(f"seed {i}: expected an (A report, B report) tuple, got {len(pair)} reports")
        try:
            by_seed.append({r.metric: r for r in compare_reports(pair[0], pair[1], metrics)})
        except ValueError as e:
            raise ValueError(f"seed {i}: {e}") from None
    names = [m for m in by_seed[0] if all(m in rows for rows in by_seed)]
    critical = math.nan
    if len(by_seed) > 1:
        from scipy.stats import t as student_t
        critical = float(student_t.ppf(0.975, len(by_seed) - 1))
    out = []
    for metric in names:
        per_seed = np.array([rows[metric].difference for rows in by_seed])
        higher = METRICS[metric]
        difference, se, a_better = _differences(per_seed, higher)
        out.append(SeedDifference(metric=metric, per_seed=tuple(float(x) for x in per_seed), difference=difference,
                                  standard_error=se, critical_t=critical, a_better_seeds=a_better,
                                  higher_is_better=higher))
    return out


def seed_comparison_table(rows: Sequence[SeedDifference], name_a: str = "A", name_b: str = "B") -> str:
    """Markdown: one row per metric, each seed's difference, their mean, SE, t and verdict."""
    lines = [f"| metric | {name_a} - {name_b} per seed | mean | SE (seeds) | t | critical t | A better in | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        arrow = "↑" if r.higher_is_better else "↓"
        seeds = ", ".join(f"{x:+.4f}" for x in r.per_seed)
        lines.append(f"| {r.metric} {arrow} | {seeds} | {r.difference:+.4f} | {r.standard_error:.4f} | {r.t:+.2f} | "
                     f"{r.critical_t:.2f} | {r.a_better_seeds}/{r.seeds} | {r.verdict} |")
    return "\n".join(lines)


def comparison_table(rows: Sequence[MetricDifference], name_a: str = "A", name_b: str = "B") -> str:
    """Markdown: one row per metric."""
    lines = [f"| metric | {name_a} | {name_b} | A - B | SE (paired) | z | A better in | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        arrow = "↑" if r.higher_is_better else "↓"
        lines.append(f"| {r.metric} {arrow} | {r.mean_a:.4f} | {r.mean_b:.4f} | {r.difference:+.4f} | "
                     f"{r.standard_error:.4f} | {r.z:+.2f} | {r.a_better}/{r.pairs} | {r.verdict} |")
    return "\n".join(lines)
