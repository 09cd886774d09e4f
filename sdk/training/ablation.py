"""The issue's ablation as one resumable command: matched (successive, joint) controller pairs over several training
seeds, each scored as (a) the successive model, (b) its joint ablation and (c) the static identity on every
evaluation set, then tested across the seeds (`otavatar train ablation`).

    out/
      runs/successive-s0/, runs/joint-s0/, ...         `train controller` run folders (ema.safetensors)
      reports/<set>/{successive,joint,static}-s0.json  `train evaluate --json-out` reports
      logs/<job>.log                                    each job's stdout + stderr
      done/<job>.json                                   written when a job exits 0: a rerun skips it
      summary.json, summary.md                          the across-seed tests and the verdict

Every job is a subprocess (`python -m otavatar.cli train ...`), `jobs` at a time, so one GPU (or one core per
run on a CPU) trains every seed of both schedules side by side in the same wall time. A run whose job did not
finish (the command was stopped) is resumed within the same budget; an evaluation without its done marker is redone.

The verdict (`AblationSummary.done_when`): on every evaluation set, (a) beats (b) AND (c) on every column of
`criteria` by two tests at once. Across seeds (Student t over the seeds' paired differences, `compare_across_seeds`):
the lead does not hang on the training seed. Over the evaluation pairs, each pair's scores averaged over the seeds
first (z over the pairs, `compare_reports` of `average_reports`): the lead does not hang on a few identities. The
seeds share the pairs, so the first test alone cannot see the pairs' noise: two seeds of 12-13 iterations, whose
detected AKD differences agreed to 0.0003 px, made it call 0.041 px significant (t 151) where the 20 pairs put it
within noise (SE 0.023 px, z 1.8; docs/training.md, the ablation on a GPU). The default columns
are the detected AKD and AED, one detector on both images as the talking-head papers define them: against the
true landmarks even a perfect reenactment ties a perfect static identity within the pairs' noise on the shipped
generator (docs/training-rounds.md, round 15). Every other column is in summary.md beside them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from otavatar.fileio import atomic_write_text
from otavatar.training.compare import (METRICS, MetricDifference, SeedDifference, average_reports,
                                       compare_across_seeds, compare_reports, comparison_table, report_means,
                                       seed_comparison_table)

__all__ = ["AblationPlan", "AblationSummary", "Job", "DEFAULT_CRITERIA", "KINDS", "SetSummary", "plan_jobs",
           "run_ablation", "run_jobs", "summarise"]

KINDS = ("successive", "joint", "static")          # (a), (b), (c)
LABELS = {"successive": "(a) successive", "joint": "(b) joint", "static": "(c) static"}
DEFAULT_CRITERIA = ("akd_detected", "aed_detected")
# columns summary.md shows (each is a METRICS name of otavatar.training.compare)
SHOWN = ("psnr", "ssim", "akd", "akd_detected", "akd_aligned", "aed", "aed_readable", "aed_detected")


@dataclass(frozen=True)
class AblationPlan:
    data: Path                          # the training set; its test split is the first evaluation set
    out: Path
    prior: Path                         # weights with the starting generator (`train controller --prior`)
    seeds: tuple[int, ...]              # one matched (successive, joint) pair per seed
    heldout: tuple[Path, ...] = ()      # further SynthHeads sets whose test splits are scored too
    train_args: tuple[str, ...] = ()    # the recipe: extra `train controller` options, the same for both schedules
    eval_args: tuple[str, ...] = ()     # extra `train evaluate` options (e.g. --steps 30 30 --videos-per-subject 2)
    max_minutes: float = 60.0           # each training run's wall-clock budget
    jobs: int = 2                       # training subprocesses at a time
    eval_jobs: int | None = None        # evaluation subprocesses at a time (None: `jobs`)
    device: str = "auto"
    threads: int = 1                    # torch threads per subprocess
    criteria: tuple[str, ...] = DEFAULT_CRITERIA

    def __post_init__(self) -> None:
        if len(self.seeds) < 2:
            raise ValueError(f"the across-seed test needs at least 2 seeds, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ, got {list(self.seeds)}")
        if not self.max_minutes > 0 or self.jobs < 1 or self.threads < 1 or (self.eval_jobs or 1) < 1:
            raise ValueError(f"max_minutes must be > 0 and jobs, eval_jobs, threads >= 1 (got {self.max_minutes}, "
                             f"{self.jobs}, {self.eval_jobs}, {self.threads})")
        owned = {"--schedule", "--seed", "--out", "--data", "--prior", "--max-minutes", "--resume", "--device",
                 "--threads", "--json-out", "--weights", "--mode"}
        for name, args in (("train_args", self.train_args), ("eval_args", self.eval_args)):
            clash = sorted(owned & {a.split("=")[0] for a in args})
            if clash:
                raise ValueError(f"{name} must not set {clash}: the ablation sets them for every job")
        unknown = [c for c in self.criteria if c not in METRICS]
        if unknown or not self.criteria:
            raise ValueError(f"criteria must be metrics of otavatar.training.compare, got {list(self.criteria)}")
        names = [p.name for p in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation sets need distinct folder names (reports are filed by them): {names}")

    @property
    def sets(self) -> tuple[Path, ...]:
        return (Path(self.data), *map(Path, self.heldout))

    def run_dir(self, schedule: str, seed: int) -> Path:
        return Path(self.out) / "runs" / f"{schedule}-s{seed}"

    @property
    def frozen_generator(self) -> bool:
        """--freeze-generator in the recipe: every run renders with the prior's generator, bit for bit (the EMA of
        an unchanged tensor is that tensor), so one static identity per set serves every seed."""
        return "--freeze-generator" in self.train_args

    def report(self, dataset: Path, kind: str, seed: int) -> Path:
        name = "static" if kind == "static" and self.frozen_generator else f"{kind}-s{seed}"
        return Path(self.out) / "reports" / Path(dataset).name / f"{name}.json"


@dataclass(frozen=True)
class Job:
    name: str                      # unique; names its log and done marker
    argv: tuple[str, ...]          # the whole command (`python -m otavatar.cli train ...`)
    output: Path                   # what the job makes (a run's ema.safetensors, a report)
    run_dir: Path | None = None    # training jobs: resumable from this folder's state.json


def plan_jobs(plan: AblationPlan) -> tuple[list[Job], list[Job]]:
    """(training jobs, evaluation jobs): both schedules per seed; (a), (b), (c) per seed and set. (c) is the static
    identity on (a)'s generator: with --freeze-generator that is the prior's, scored once per set."""
    common = ("--device", plan.device, "--threads", str(plan.threads))
    cli = (sys.executable, "-m", "otavatar.cli")
    train = []
    for seed in plan.seeds:
        for schedule in ("successive", "joint"):
            run = plan.run_dir(schedule, seed)
            argv = (*cli, "train", "controller", "--data", str(plan.data), "--prior", str(plan.prior),
                    "--schedule", schedule, "--seed", str(seed), "--out", str(run), *plan.train_args, *common)
            train.append(Job(f"train-{schedule}-s{seed}", argv, run / "ema.safetensors", run))
    evaluate, planned = [], set()
    for dataset in plan.sets:
        for seed in plan.seeds:
            for kind in KINDS:
                out = plan.report(dataset, kind, seed)
                if out in planned:
                    continue                                  # the shared static identity, already planned
                planned.add(out)
                weights = plan.run_dir("successive" if kind == "static" else kind, seed) / "ema.safetensors"
                if kind == "static" and plan.frozen_generator:
                    weights = Path(plan.prior)
                mode = ("--mode", "static") if kind == "static" else ()
                argv = (*cli, "train", "evaluate", "--weights", str(weights), "--data", str(dataset), *mode,
                        "--json-out", str(out), *plan.eval_args, *common)
                evaluate.append(Job(f"eval-{Path(dataset).name}-{out.stem}", argv, out))
    return train, evaluate


def _resumed(job: Job, max_minutes: float) -> tuple[str, ...] | None:
    """A training job's argv with its time budget: a new run gets --max-minutes; a run stopped before its marker
    gets --resume too (the trainer counts a resumed run's minutes from its first start, so the budget is the same);
    None when its last checkpoint already spent the budget."""
    state = job.run_dir / "state.json" if job.run_dir is not None else None
    if state is None:
        return job.argv
    budget = ("--max-minutes", f"{max_minutes:g}")
    if not state.exists():
        return (*job.argv, *budget)
    if json.loads(state.read_text())["seconds"] / 60 >= max_minutes - 0.05:
        return None
    return (*job.argv, "--resume", *budget)


def run_jobs(jobs: Sequence[Job], out: Path, parallel: int, *, max_minutes: float = 0.0,
             echo: Callable[[str], Any] = print) -> None:
    """Run `jobs` as subprocesses, `parallel` at a time; skip those with a done marker. A job is done when it exits
    0 and its output exists. Raises RuntimeError naming every failed job and its log (the others still run to the
    end, so a rerun redoes only the failed ones). max_minutes: the training runs' budget (see _resumed)."""
    logs, done = Path(out) / "logs", Path(out) / "done"
    logs.mkdir(parents=True, exist_ok=True)
    done.mkdir(parents=True, exist_ok=True)
    pending = []
    for job in jobs:
        if (done / f"{job.name}.json").exists():
            echo(f"skip {job.name} (done)")
        else:
            pending.append(job)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    running: dict[str, tuple[Job, subprocess.Popen, float, Any]] = {}
    failed: list[str] = []

    def finish(job: Job, rc: int, seconds: float) -> None:
        if rc == 0 and Path(job.output).exists():
            (done / f"{job.name}.json").write_text(json.dumps({"seconds": round(seconds, 1), "argv": job.argv}))
            echo(f"done  {job.name} in {seconds:.0f} s")
        else:
            failed.append(f"{job.name} (exit {rc}; log {logs / f'{job.name}.log'})")
            echo(f"FAIL  {job.name}: exit {rc}, see {logs / f'{job.name}.log'}")

    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            argv = _resumed(job, max_minutes)
            if argv is None:            # its run spent its whole budget, then was stopped before the marker
                finish(job, 0, 0.0)
                continue
            echo(f"start {job.name}: {' '.join(argv[1:])}")
            Path(job.output).parent.mkdir(parents=True, exist_ok=True)
            log = open(logs / f"{job.name}.log", "a")
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env)
            running[job.name] = (job, proc, time.perf_counter(), log)
        time.sleep(0.2)
        for name, (job, proc, start, log) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            del running[name]
            finish(job, rc, time.perf_counter() - start)
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed: {'; '.join(failed)}")


VERSUS = {"a_vs_b": ("successive", "joint"), "a_vs_c": ("successive", "static"), "b_vs_c": ("joint", "static")}


@dataclass(frozen=True)
class SetSummary:
    means: dict[str, dict[str, float]]                 # kind -> metric -> mean over pairs, then over seeds
    tests: dict[str, dict[str, SeedDifference]]        # VERSUS key -> metric -> the across-seed test
    pairs: dict[str, dict[str, MetricDifference]]      # VERSUS key -> metric -> over the pairs, seeds averaged


@dataclass(frozen=True)
class AblationSummary:
    seeds: tuple[int, ...]
    criteria: tuple[str, ...]
    sets: dict[str, SetSummary]                        # evaluation set (folder name) -> its summary
    training: dict[str, dict[str, Any]] = field(default_factory=dict)    # run name -> iterations, seconds, rollbacks

    @property
    def done_when(self) -> dict[str, bool]:
        """Per set: (a) beats (b) and (c) on every criterion, across seeds and over the pairs."""
        return {name: all(entry.tests[versus][metric].verdict == "A better"
                          and entry.pairs[versus][metric].verdict == "A better"
                          for versus in ("a_vs_b", "a_vs_c") for metric in self.criteria)
                for name, entry in self.sets.items()}

    @property
    def met(self) -> bool:
        return bool(self.sets) and all(self.done_when.values())

    def to_dict(self) -> dict[str, Any]:
        sets = {name: {"means": entry.means,
                       "tests": {v: {m: r.to_dict() for m, r in rows.items()} for v, rows in entry.tests.items()},
                       "pairs": {v: {m: r.to_dict() for m, r in rows.items()} for v, rows in entry.pairs.items()}}
                for name, entry in self.sets.items()}
        return {"seeds": list(self.seeds), "criteria": list(self.criteria), "done_when": self.done_when,
                "met": self.met, "sets": sets, "training": self.training}

    def markdown(self) -> str:
        lines = [f"Seeds {list(self.seeds)}; the done-when columns: {', '.join(self.criteria)}. "
                 f"**Done-when {'met' if self.met else 'not met'}** "
                 f"({', '.join(f'{k}: {v}' for k, v in self.done_when.items())}).", ""]
        if self.training:
            lines += ["| run | iterations | seconds | rolled back |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['iterations']} | {v['seconds']:.0f} | {v['rolled_back']} |"
                      for k, v in self.training.items()]
            lines.append("")
        for name, entry in self.sets.items():
            lines += [f"### {name}: means over seeds", "", "| model | " + " | ".join(SHOWN) + " |",
                      "|---" * (len(SHOWN) + 1) + "|"]
            for kind in KINDS:
                means = entry.means[kind]
                lines.append(f"| {LABELS[kind]} | " + " | ".join(f"{means.get(m, float('nan')):.4f}" for m in SHOWN)
                             + " |")
            for versus, (a, b) in VERSUS.items():
                rows = [entry.tests[versus][m] for m in SHOWN if m in entry.tests[versus]]
                lines += ["", f"### {name}: {LABELS[a]} vs {LABELS[b]} across seeds", "",
                          seed_comparison_table(rows, a, b)]
                rows = [entry.pairs[versus][m] for m in SHOWN if m in entry.pairs[versus]]
                lines += ["", f"### {name}: {LABELS[a]} vs {LABELS[b]} over the pairs, seeds averaged", "",
                          comparison_table(rows, a, b)]
            lines.append("")
        return "\n".join(lines)


def _training_summary(run: Path) -> dict[str, Any]:
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else {}
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
    rolled = sum(1 for row in rows if "rolled_back" in row)     # the spike guard's rows (decouple.train_controller)
    return {"iterations": int(state.get("step", 0)), "seconds": float(state.get("seconds", 0.0)),
            "rolled_back": rolled}


def summarise(plan: AblationPlan) -> AblationSummary:
    """Load every report and test (a) vs (b), (a) vs (c) and (b) vs (c) across seeds and over the pairs (seeds
    averaged) on every set."""
    loaded: dict[Path, Mapping[str, Any]] = {}          # the shared static report is read once, not once per seed

    def load(path: Path) -> Mapping[str, Any]:
        if path not in loaded:
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing report (run the ablation's evaluation jobs)")
            loaded[path] = json.loads(path.read_text())
        return loaded[path]

    sets: dict[str, SetSummary] = {}
    for dataset in plan.sets:
        reports = {kind: [load(plan.report(dataset, kind, seed)) for seed in plan.seeds] for kind in KINDS}
        tests = {versus: {r.metric: r for r in compare_across_seeds(list(zip(reports[a], reports[b])))}
                 for versus, (a, b) in VERSUS.items()}
        averaged = {kind: average_reports(reports[kind]) for kind in KINDS}
        pairs = {versus: {r.metric: r for r in compare_reports(averaged[a], averaged[b])}
                 for versus, (a, b) in VERSUS.items()}
        # the mean over pairs of the seed-averaged pairs is the mean over seeds of each seed's mean over pairs
        means = {kind: report_means(report) for kind, report in averaged.items()}
        sets[Path(dataset).name] = SetSummary(means=means, tests=tests, pairs=pairs)
    training = {f"{schedule}-s{seed}": _training_summary(plan.run_dir(schedule, seed))
                for seed in plan.seeds for schedule in ("successive", "joint")}
    return AblationSummary(seeds=tuple(plan.seeds), criteria=tuple(plan.criteria), sets=sets, training=training)


def run_ablation(plan: AblationPlan, *, echo: Callable[[str], Any] = print) -> AblationSummary:
    """Train, evaluate, summarise (module docstring); writes summary.json and summary.md under plan.out."""
    for path in (plan.prior, *plan.sets):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    for dataset in plan.sets:
        if not (Path(dataset) / "truth.npz").exists():
            raise FileNotFoundError(f"{dataset}: not a SynthHeads dataset (no truth.npz; make one with "
                                    "`otavatar synth`)")
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: (list(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in plan.__dict__.items()}
    atomic_write_text(out / "plan.json", json.dumps(settings, indent=2))
    train, evaluate = plan_jobs(plan)
    run_jobs(train, out, plan.jobs, max_minutes=plan.max_minutes, echo=echo)
    run_jobs(evaluate, out, plan.eval_jobs or plan.jobs, echo=echo)
    summary = summarise(plan)
    atomic_write_text(out / "summary.json", json.dumps(summary.to_dict(), indent=2))
    atomic_write_text(out / "summary.md", summary.markdown())
    return summary
