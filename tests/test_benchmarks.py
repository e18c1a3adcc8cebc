"""Smoke runs of the benchmarks that stand in for a net or patch the callbacks' hooks.

Such scripts break silently when the callbacks they imitate change (``bench_update_curvature``
did for a session). Each runs here as a user would, with tiny settings; their figures are not
checked, only that they run to the end and print their table.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


CASES = [
    (["bench_update_curvature.py", "--pairs", "3"], "UpdateCurvature +"),
    (["bench_step_callbacks.py", "--steps", "40", "--block", "5"], "none (control)"),
    (["bench_cold_start.py", "--quick"], "(package default)"),
    (["bench_rotation_noise.py", "--quick"], "median products per warm measurement"),
    (["bench_far_past_edge.py"], "(d) float32 regressor diverged"),
    (["bench_min_eigenvalue.py", "--quick"], "4-8-3 sigmoid, tracker-like chain"),
    (["bench_start_blocks.py", "--quick"], "exact minimum eigenvector"),
    (["bench_sparse_tracking.py", "--quick"], "block + random: misses"),
    # the fit's own rows must be the probe's replays: the benchmark stands in for the tracker
    (["bench_probe.py", "--quick"], "The fits' own rows equal the probe's replays: True"),
    (["bench_gradient_blocks.py", "--quick"], "quotient: median"),
    (["bench_cross_entropy.py", "--quick"], "1000 x 3"),
    # wraps the tracker's, the solver's and the R-operator's functions with clocks
    (["bench_measurement_parts.py", "--quick"], "per product: the product"),
    # reads the estimator's private tensors
    (["bench_cold_cluster.py", "--quick"], "top five eigenvalues within 1%"),
    # patches the tracker's measurement and the solver's warm top-pair rule (one fit, 5 s)
    (["bench_tracker_misses.py", "--fit", "breast cancer", "--warm-gap", "0.3", "--replay-warm-gap", "0.3"],
     "all, with the warm gap 0.3"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[args[0].removesuffix(".py") for args, _ in CASES])
def test_benchmark_runs(args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
