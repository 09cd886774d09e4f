"""Paired comparison of reenactment reports: the arithmetic, the verdicts and the refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from otavatar.cli import main
from otavatar.synthetic import CONTROLS
from otavatar.training.compare import (average_reports, compare_across_seeds, compare_reports, comparison_table,
                                       report_means, seed_comparison_table)


def _report(akd, aed_controls, psnr=None, readable=("jaw_open",), frames=32, resolution=128):
    """A report dict as `train evaluate --json-out` writes it, one pair per value."""
    pairs = []
    for i, (k, c) in enumerate(zip(akd, aed_controls)):
        pairs.append({"source": f"s{i}", "driver": f"d{i}", "frames": frames, "akd": k,
                      "psnr": 20.0 if psnr is None else psnr[i], "ssim": 0.75, "aed": float(np.mean(c)),
                      "aed_controls": list(c)})
    return {"frames": frames, "resolution": resolution, "pairs": pairs, "readable_controls": list(readable)}


def _controls(jaw, rest=0.1):
    return [jaw if name == "jaw_open" else rest for name in CONTROLS]


def _row(rows, metric):
    return next(r for r in rows if r.metric == metric)


def test_paired_difference_standard_error_and_wins():
    a = _report([4.0, 5.0, 6.0, 7.0], [_controls(0.10)] * 4)
    b = _report([4.5, 5.4, 6.6, 7.3], [_controls(0.12)] * 4)
    akd = _row(compare_reports(a, b), "akd")
    diff = np.array([-0.5, -0.4, -0.6, -0.3])
    assert akd.difference == pytest.approx(diff.mean())
    assert akd.standard_error == pytest.approx(diff.std(ddof=1) / 2)       # sqrt(4 pairs)
    assert akd.a_better == 4 and akd.pairs == 4 and akd.verdict == "A better"
    assert akd.mean_a == pytest.approx(5.5) and akd.mean_b == pytest.approx(5.95)
    # the unpaired spread (1.3 px) would call this noise; paired, z is about -9
    assert akd.z < -5


def test_readable_aed_uses_only_the_readable_controls():
    a = _report([4.0, 4.0, 4.0], [_controls(0.10, rest=0.9), _controls(0.11, rest=0.9), _controls(0.12, rest=0.9)])
    b = _report([4.0, 4.0, 4.0], [_controls(0.20, rest=0.0), _controls(0.22, rest=0.0), _controls(0.21, rest=0.0)])
    rows = compare_reports(a, b)
    readable = _row(rows, "aed_readable")
    assert readable.difference == pytest.approx(np.mean([-0.10, -0.11, -0.09]))
    assert readable.verdict == "A better"
    assert _row(rows, "aed").verdict == "B better"                         # the unreadable controls dominate aed
    assert _row(rows, "akd").verdict == "within noise" and _row(rows, "akd").z == 0.0


def test_noisy_difference_is_within_noise_and_higher_is_better_for_psnr():
    a = _report([4.0] * 4, [_controls(0.1)] * 4, psnr=[20.0, 21.0, 19.0, 20.5])
    b = _report([4.0] * 4, [_controls(0.1)] * 4, psnr=[20.5, 20.0, 19.5, 20.0])
    psnr = _row(compare_reports(a, b), "psnr")
    assert psnr.a_better == 2 and psnr.verdict == "within noise"
    a2 = _report([4.0] * 3, [_controls(0.1)] * 3, psnr=[21.0, 21.2, 21.1])
    b2 = _report([4.0] * 3, [_controls(0.1)] * 3, psnr=[20.0, 20.1, 20.0])
    assert _row(compare_reports(a2, b2), "psnr").verdict == "A better"
    assert _row(compare_reports(b2, a2), "psnr").verdict == "B better"


def test_infinite_psnr_and_a_single_pair_give_no_verdict():
    a = _report([4.0], [_controls(0.1)], psnr=["inf"])
    b = _report([4.0], [_controls(0.1)], psnr=[20.0])
    psnr = _row(compare_reports(a, b), "psnr")
    assert math.isnan(psnr.standard_error) and psnr.verdict == "within noise"
    assert psnr.to_dict()["standard_error"] == "nan" and psnr.to_dict()["difference"] == "inf"
    json.dumps(psnr.to_dict(), allow_nan=False)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(frames=16), "differ in frames"),
    (lambda r: r.update(resolution=64), "differ in resolution"),
    (lambda r: r["pairs"][0].update(driver="other"), "different pairs"),
    (lambda r: r.update(pairs=[]), "has no pairs"),
    (lambda r: r["pairs"].append(dict(r["pairs"][0])), "report B lists a"),
])
def test_mismatched_reports_are_refused(change, message):
    a = _report([4.0, 5.0], [_controls(0.1)] * 2)
    b = _report([4.0, 5.0], [_controls(0.1)] * 2)
    change(b)
    with pytest.raises(ValueError, match=message):
        compare_reports(a, b)


def test_regional_akd_only_when_both_reports_hold_per_landmark_distances():
    a = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    b = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    for report, mouth in ((a, [3.0, 3.2, 3.1]), (b, [4.0, 4.1, 4.3])):
        for pair, m in zip(report["pairs"], mouth):
            pair["akd_landmarks"] = [pair["akd"]] * 48 + [m] * 20
    rows = compare_reports(a, b)
    mouth = _row(rows, "akd_mouth")
    assert mouth.difference == pytest.approx(np.mean([-1.0, -0.9, -1.2])) and mouth.verdict == "A better"
    assert _row(rows, "akd_jaw").difference == 0.0
    del b["pairs"][0]["akd_landmarks"]
    assert not any(r.metric.startswith("akd_") for r in compare_reports(a, b))
    with pytest.raises(ValueError, match="akd_landmarks"):
        compare_reports(a, b, metrics=["akd_mouth"])


def test_detected_metrics_only_when_both_reports_hold_them():
    a = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    b = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    for report, (whole, mouth, aed) in ((a, ([0.4, 0.5, 0.6], [0.5, 0.6, 0.7], 0.02)),
                                        (b, ([0.9, 0.8, 1.2], [1.5, 1.4, 1.9], 0.05))):
        for pair, w, m in zip(report["pairs"], whole, mouth):
            pair.update(akd_detected=w, akd_detected_landmarks=[w] * 48 + [m] * 20,
                        aed_detected=aed, aed_detected_controls=[aed] * len(CONTROLS))
    rows = compare_reports(a, b)
    assert _row(rows, "akd_detected").difference == pytest.approx(np.mean([-0.5, -0.3, -0.6]))
    assert _row(rows, "akd_detected_mouth").difference == pytest.approx(np.mean([-1.0, -0.8, -1.2]))
    assert _row(rows, "aed_detected").difference == pytest.approx(-0.03)
    assert not any(r.metric.startswith("akd_") and "detected" not in r.metric for r in rows)   # no akd_landmarks
    for pair in b["pairs"]:
        del pair["akd_detected_landmarks"]
    assert "akd_detected" not in {r.metric for r in compare_reports(a, b)}
    assert "aed_detected" in {r.metric for r in compare_reports(a, b)}
    with pytest.raises(ValueError, match="akd_detected_landmarks"):
        compare_reports(a, b, metrics=["akd_detected"])


def test_aligned_akd_only_when_both_reports_hold_it():
    a = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    b = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    for report, whole, mouth in ((a, [0.4, 0.5, 0.6], 0.3), (b, [0.6, 0.6, 0.9], 0.9)):
        for pair, w in zip(report["pairs"], whole):
            pair.update(akd_aligned=w, akd_aligned_landmarks=[w] * 48 + [mouth] * 20)
    rows = compare_reports(a, b)
    assert _row(rows, "akd_aligned").difference == pytest.approx(np.mean([-0.2, -0.1, -0.3]))
    assert _row(rows, "akd_aligned_mouth").difference == pytest.approx(-0.6)
    averaged = average_reports([a, a])
    assert averaged["pairs"][0]["akd_aligned_landmarks"] == a["pairs"][0]["akd_aligned_landmarks"]
    del b["pairs"][2]["akd_aligned_landmarks"]
    assert not any("aligned" in r.metric for r in compare_reports(a, b))
    with pytest.raises(ValueError, match="akd_aligned_landmarks"):
        compare_reports(a, b, metrics=["akd_aligned"])


def test_unknown_metric_is_refused():
    a = _report([4.0, 5.0], [_controls(0.1)] * 2)
    with pytest.raises(ValueError, match="unknown metric"):
        compare_reports(a, a, metrics=["fid"])


def test_cli_prints_a_table_and_writes_json(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)))
    b.write_text(json.dumps(_report([4.2, 5.3, 6.1], [_controls(0.1)] * 3)))
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["train", "compare", str(a), str(b), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| akd ↓ | 5.0000 | 5.2000 | -0.2000 |" in result.output and "A better in" in result.output
    rows = {r["metric"]: r for r in json.loads(out.read_text())}
    assert rows["akd"]["a_better"] == 3 and rows["akd"]["verdict"] == "A better"          # z = -0.2 / 0.058
    assert rows["psnr"]["z"] == 0.0 and rows["psnr"]["verdict"] == "within noise"
    (tmp_path / "bad.json").write_text("{")
    result = CliRunner().invoke(main, ["train", "compare", str(a), str(tmp_path / "bad.json")])
    assert result.exit_code != 0 and "not JSON" in result.output
    (tmp_path / "other.json").write_text(json.dumps({"pairs": [{"source": "x"}], "frames": 32, "resolution": 128}))
    result = CliRunner().invoke(main, ["train", "compare", str(a), str(tmp_path / "other.json")])
    assert result.exit_code != 0 and "Error" in result.output and "Traceback" not in result.output


def test_table_has_one_row_per_metric():
    a = _report([4.0, 5.0], [_controls(0.1)] * 2)
    assert comparison_table(compare_reports(a, a)).count("\n") == 2 + 4


def test_average_reports_averages_each_pair_over_the_reports():
    seed0 = _report([4.0, 6.0], [_controls(0.10), _controls(0.20)], psnr=[20.0, 18.0])
    seed1 = _report([5.0, 7.0], [_controls(0.30), _controls(0.40)], psnr=[22.0, 19.0])
    seed1["pairs"].reverse()                                    # matched by (source, driver), not by position
    mean = average_reports([seed0, seed1])
    assert [p["akd"] for p in mean["pairs"]] == [4.5, 6.5]
    assert [p["psnr"] for p in mean["pairs"]] == [21.0, 18.5]
    assert mean["pairs"][0]["aed_controls"] == pytest.approx(_controls(0.20))
    assert mean["readable_controls"] == ["jaw_open"] and mean["averaged_reports"] == 2
    # the averaged report compares like any other
    assert _row(compare_reports(mean, seed0), "akd").difference == pytest.approx(0.5)


@pytest.mark.parametrize("change, message", [({"frames": 16}, "frames"), ({"pairs": []}, "no pairs")])
def test_average_reports_refuses_reports_that_do_not_match(change, message):
    a = _report([4.0, 5.0], [_controls(0.1)] * 2)
    with pytest.raises(ValueError, match=message):
        average_reports([a, {**a, **change}])
    other = _report([4.0, 5.0, 6.0], [_controls(0.1)] * 3)
    with pytest.raises(ValueError, match="different"):
        average_reports([a, other])


def test_cli_averages_comma_joined_reports(tmp_path):
    files = {}
    for name, akd in (("a0", [4.0, 5.0, 6.0]), ("a1", [4.2, 5.0, 6.2]), ("b", [4.5, 5.5, 6.5])):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(_report(akd, [_controls(0.1)] * 3)))
    result = CliRunner().invoke(main, ["train", "compare", f"{files['a0']},{files['a1']}", str(files["b"])])
    assert result.exit_code == 0, result.output
    assert "| akd ↓ | 5.0667 | 5.5000 | -0.4333 |" in result.output and "a0+a1" in result.output
    result = CliRunner().invoke(main, ["train", "compare", f"{files['a0']},{tmp_path / 'nope.json'}", str(files["b"])])
    assert result.exit_code != 0 and "nope.json: no such report file" in result.output


def _seed_pair(shift_a, shift_b, base=(4.0, 5.0, 6.0)):
    """Seed i's matched pair: A and B on the same three evaluation pairs, A's AKD shifted by shift_a, B's by shift_b."""
    return (_report([x + shift_a for x in base], [_controls(0.1)] * 3),
            _report([x + shift_b for x in base], [_controls(0.1)] * 3))


def test_across_seeds_tests_the_per_seed_differences():
    rows = compare_across_seeds([_seed_pair(-0.30, 0.0), _seed_pair(-0.20, 0.0), _seed_pair(-0.25, 0.0)])
    akd = _row(rows, "akd")
    per_seed = np.array([-0.30, -0.20, -0.25])
    assert akd.per_seed == pytest.approx(tuple(per_seed)) and akd.seeds == 3
    assert akd.difference == pytest.approx(per_seed.mean())
    assert akd.standard_error == pytest.approx(per_seed.std(ddof=1) / math.sqrt(3))
    assert akd.critical_t == pytest.approx(4.303, abs=1e-3)       # Student t, 2 degrees of freedom
    assert akd.t == pytest.approx(-8.66, abs=0.01) and akd.verdict == "A better" and akd.a_better_seeds == 3
    assert _row(rows, "psnr").verdict == "within noise" and _row(rows, "psnr").t == 0.0
    assert "| akd ↓ | -0.3000, -0.2000, -0.2500 | -0.2500 |" in seed_comparison_table(rows)
    assert json.loads(json.dumps(akd.to_dict()))["verdict"] == "A better"


def test_across_seeds_a_lead_one_seed_reverses_is_noise():
    # every seed's own comparison is exact (identical shifts on every pair: SE 0), yet the seeds disagree
    rows = compare_across_seeds([_seed_pair(-0.30, 0.0), _seed_pair(0.25, 0.0)])
    akd = _row(rows, "akd")
    assert akd.verdict == "within noise" and akd.a_better_seeds == 1 and akd.critical_t > 12
    one = _row(compare_across_seeds([_seed_pair(-0.30, 0.0)]), "akd")
    assert math.isnan(one.standard_error) and math.isnan(one.t) and one.verdict == "within noise"


def test_across_seeds_refuses_bad_input():
    with pytest.raises(ValueError, match="no seeds"):
        compare_across_seeds([])
    a, b = _seed_pair(0.0, 0.1)
    with pytest.raises(ValueError, match="seed 1: the reports are on different pairs"):
        compare_across_seeds([(a, b), (a, _report([4.0], [_controls(0.1)]))])
    with pytest.raises(ValueError, match="seed 0: expected an"):
        compare_across_seeds([(a,)])


def test_cli_across_seeds(tmp_path):
    paths = {}
    for i, (a, b) in enumerate([_seed_pair(-0.3, 0.0), _seed_pair(-0.2, 0.0), _seed_pair(-0.25, 0.0)]):
        for name, report in (("a", a), ("b", b)):
            paths[f"{name}{i}"] = tmp_path / f"{name}{i}.json"
            paths[f"{name}{i}"].write_text(json.dumps(report))
    side_a = ",".join(str(paths[f"a{i}"]) for i in range(3))
    side_b = ",".join(str(paths[f"b{i}"]) for i in range(3))
    out = tmp_path / "seeds.json"
    result = CliRunner().invoke(main, ["train", "compare", "--across-seeds", side_a, side_b, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| akd ↓ | -0.3000, -0.2000, -0.2500 | -0.2500 |" in result.output and "a0+a1+a2 - b0+b1+b2" in result.output
    assert next(r for r in json.loads(out.read_text()) if r["metric"] == "akd")["verdict"] == "A better"
    result = CliRunner().invoke(main, ["train", "compare", "--across-seeds", side_a, str(paths["b0"])])
    assert result.exit_code != 0 and "one report per seed on each side" in result.output


def test_report_means_are_what_a_comparison_reads_as_its_means():
    a = _report([4.0, 5.0, 6.0], [_controls(0.1, rest=0.9), _controls(0.2, rest=0.9), _controls(0.3, rest=0.9)])
    b = _report([1.0, 1.0, 1.0], [_controls(0.5)] * 3)
    means = report_means(a)
    assert means["akd"] == pytest.approx(5.0) and means["aed_readable"] == pytest.approx(0.2)
    assert means == {r.metric: pytest.approx(r.mean_a) for r in compare_reports(a, b)}
    with pytest.raises(ValueError, match="unknown metric"):
        report_means(a, ["speed"])
