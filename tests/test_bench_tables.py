"""The documentation's benchmark tables say what the results files say (docs/_bench_tables.py)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("_bench_tables", ROOT / "docs" / "_bench_tables.py")
bench_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_tables)


def _rows(table):
    """The body rows of a list-table as lists of cells."""
    rows, row = [], None
    for line in table.splitlines():
        if line.startswith("   * - "):
            row = [line[len("   * - "):]]
            rows.append(row)
        elif line.startswith("     - ") and row is not None:
            row.append(line[len("     - "):])
    return rows[1:]


def _results(**judged):
    return {"overhead": {"100": {"hvps_warm": {"n": 15, "median": 27.0}, "overhead": 0.54,
                                 "overhead_within": 0.44}},
            "audited": {"summary": {"err_sharpness": {"max": 5.2e-5}}},
            "hvp_cost": {"hvp_per_gradient": 1.33},
            "eigsh": {"points": [{}], "median_tight_time_ratio": 6.8},
            "targets": judged}


def test_targets_table_follows_the_scripts_judgement():
    keys = ["hvps_warm_median_le_20", "sharpness_err_max_le_1e-3", "hvp_le_1.7_gradients",
            "eigsh_speedup_ge_5", "overhead_every100_le_40pct"]
    judged = {key: i % 2 == 0 for i, key in enumerate(keys)}
    rows = _rows(bench_tables._targets(_results(**judged)))
    assert [r[2] for r in rows] == ["met", "missed", "met", "missed", "met"]
    assert [r[1] for r in rows] == ["27", "5.2e-05", "1.33", "6.8x", "+54% whole, +44% within"]


def test_targets_table_without_figures():
    assert bench_tables._targets({"overhead": {}}) == ""  # an older results file: no table
    data = _results(hvps_warm_median_le_20=False)
    del data["hvp_cost"], data["eigsh"]
    data["overhead"]["100"] = {}
    rows = _rows(bench_tables._targets(data))
    assert [r[1] for r in rows] == ["n/a", "5.2e-05", "n/a", "n/a", "n/a"]
    assert {r[2] for r in rows} == {"missed"}  # a target the file does not judge is not met


def test_run_of_record_table():
    data = json.loads((ROOT / "benchmarks" / "results" / "tracking.json").read_text())
    text = bench_tables.tracking()
    rows = _rows(text[text.index("**Targets**"):text.index("**Fit-time")])
    assert [r[2] == "met" for r in rows] == list(data["targets"].values())
    assert rows[0][1] == f"{data['overhead']['100']['hvps_warm']['median']:g}"
