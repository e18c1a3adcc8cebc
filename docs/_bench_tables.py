"""Benchmark tables for ``docs/benchmarks.rst``, written at build time from the results files.

``conf.py`` calls `write_tables` before Sphinx reads the sources. For each benchmark it
writes ``docs/generated/bench/<name>.inc`` (ignored by git, not a Sphinx document: it is
pulled into ``benchmarks.rst`` by ``.. include::``): either tables of the numbers in
``benchmarks/results/<name>.json``, labelled with the exact command that writes that file
(derived from the settings stored in it), or, when the file does not exist, the command to
run. Nothing here measures or invents a figure.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = Path(__file__).resolve().parent / "generated" / "bench"


def _table(header, rows, widths=None):
    """A reST list-table."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def _missing(command, path):
    return (f".. note::\n\n   No results file yet (``{path}``). Run ``{command}`` to measure; "
            f"the tables appear here on the next documentation build.\n")


def _source(command, path, settings_line):
    return (f"Command: ``{command}``, results file ``{path}``.\n\n{settings_line}\n\n")


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


# -- bench_gd_step.py ---------------------------------------------------------------------
def gd_step():
    path = "benchmarks/results/gd_step.json"
    file = ROOT / path
    if not file.exists():
        return _missing("python benchmarks/bench_gd_step.py --mse", path)
    data = json.loads(file.read_text())
    s, results = data["settings"], data["results"]
    command = "python benchmarks/bench_gd_step.py"
    if s["steps"] == 200 and s["repeats"] == 2:
        command += " --quick"
    else:
        if s["steps"] != 2000:
            command += f" --steps {s['steps']}"
        if s["repeats"] != 3:
            command += f" --repeats {s['repeats']}"
    if s.get("skorch_steps") not in (None, max(2, round(s["steps"] * 0.25))):
        command += f" --skorch-fraction {s['skorch_steps'] / s['steps']:g}"
    if any(name.endswith("(mse)") for name in results):
        command += " --mse"
    settings = (f"Digits, n_train {s['n_train']}, MLP {s['architecture']}, lr {s['lr']}, "
                f"{s['dtype']}, {s['torch_threads']} torch thread(s); {s['repeats']} repeats; "
                f"torch {s['torch']}, scikit-learn {s['sklearn']}, skorch {s['skorch']}, "
                f"Python {s['python']}, {s['cpu_count']} CPUs ({s['machine']}).")
    rows = []
    for name, r in results.items():
        rows.append([f"``{name}``", r["steps"], f"{r['ms_per_step']:.2f}", f"{r['ratio']:.2f}",
                     f"{r['cpu_ms_per_step']:.2f}", f"{r['cpu_ratio']:.2f}", f"{r['final_loss']:.3g}",
                     _fmt(r.get("fixed_cost_ms"), ".1f")])
    header = ["variant", "steps", "wall ms / step", "ratio to raw loop", "CPU ms / step",
              "CPU ratio", "final training loss", "fixed cost of a fit (ms)"]
    return (_source(command, path, settings) + _table(header, rows)
            + "\nTimes per step are medians over the repeats; ratios are medians of the "
              "within-repeat ratios to the raw PyTorch loop with the same loss ('raw' for "
              "cross-entropy, 'raw (mse)' for squared error).\n")


# -- bench_tracking.py --------------------------------------------------------------------
def _targets(data):
    """The tracking issue's five targets against this run, each judged by the script itself
    (its ``targets`` booleans); a run that lacks a figure shows n/a."""
    judged = data.get("targets")
    if not judged:
        return ""
    o = data["overhead"].get("100", {})
    hw = o.get("hvps_warm", {})
    err = data.get("audited", {}).get("summary", {}).get("err_sharpness", {})
    h = data.get("hvp_cost") or {}
    e = data.get("eigsh") or {}
    pct = lambda x: f"+{100 * x:.0f}%"  # noqa: E731
    rows = [
        ("median HVPs per warm measurement (every 100 steps) <= 20",
         f"{hw['median']:g}" if hw.get("n") else "n/a", "hvps_warm_median_le_20"),
        ("sharpness relative error <= 1e-3 (largest audited)",
         f"{err['max']:.1e}" if "max" in err else "n/a", "sharpness_err_max_le_1e-3"),
        ("one HVP <= 1.7 gradients", f"{h['hvp_per_gradient']:.2f}" if h else "n/a",
         "hvp_le_1.7_gradients"),
        ("speed-up over eigsh at equal or better accuracy >= 5x",
         f"{e['median_tight_time_ratio']:.1f}x" if e.get("points") else "n/a", "eigsh_speedup_ge_5"),
        ("fit time added by tracking every 100 steps <= 40% (whole fit and within)",
         f"{pct(o['overhead'])} whole, {pct(o['overhead_within'])} within" if "overhead_within" in o
         else "n/a", "overhead_every100_le_40pct"),
    ]
    table = _table(["target (tracking issue)", "this run", "status"],
                   [[t, v, "met" if judged.get(key) else "missed"] for t, v, key in rows])
    return "**Targets** (as judged by the script):\n\n" + table + "\n"


def tracking():
    path = "benchmarks/results/tracking.json"
    file = ROOT / path
    if not file.exists():
        return _missing("python benchmarks/bench_tracking.py", path)
    data = json.loads(file.read_text())
    s = data["settings"]
    command = "python benchmarks/bench_tracking.py"
    if s.get("quick"):
        command += " --quick"
    else:
        if s["steps"] != 1500:
            command += f" --steps {s['steps']}"
        if s["repeats"] != 5:
            command += f" --repeats {s['repeats']}"
        if s.get("context_repeats", 2) != 2:
            command += f" --context-repeats {s['context_repeats']}"
    repeats = (f"{s['repeats']} repeats of every 0 / 100 and {s['context_repeats']} of 0 / 50 / 10"
               if "context_repeats" in s else f"{s['repeats']} repeats")
    settings = (f"Digits, MLP {s['architecture']}, {s['loss']}, lr {s['lr']} (2/lr = "
                f"{s['threshold']:g}), {s['dtype']}, {s['steps']} GD steps, tracker k={s['k']}, "
                f"tol {s['tol']:g}, rest_tol {s['rest_tol']:g}; {repeats}, "
                f"{s['torch_threads']} torch thread(s); torch {s['torch']}, Python {s['python']}, "
                f"{s['cpu_count']} CPUs."
                + (" **This is a quick (smoke) run**: few steps and repeats, so the figures are "
                   "indicative only; run the command without ``--quick`` for the full "
                   "measurement." if s.get("quick") else ""))
    out = [_source(command, path, settings)]
    out.append(_targets(data))

    out.append("**Fit-time overhead of tracking** (median fit time; whole fit = median of the "
               "within-repeat ratios to the fit without tracking, minus 1; within = the time spent "
               "in the measurements of a tracked fit over the rest of that same fit, median over "
               "the repeats, which the host's load from fit to fit does not move):\n\n")
    rows = []
    spread = lambda v: f"{100 * min(v):.0f}% to {100 * max(v):.0f}%"  # noqa: E731
    for every, o in data["overhead"].items():
        warm = o["hvps_warm"]
        warm_text = (f"{warm['median']:g} ({warm['min']:g}-{warm['max']:g})" if warm.get("n") else "n/a")
        tracked = every != "0"
        within = o.get("overheads_within")
        rows.append([every, f"{o['median_seconds']:.1f}", f"{100 * o['overhead']:.0f}%",
                     spread(o["overheads"]) if tracked else "",
                     f"{100 * o['overhead_within']:.0f}% ({spread(within)})" if tracked and within else "",
                     o["n_measurements"], o["total_hvps"], warm_text])
    out.append(_table(["sharpness_every", "fit s", "overhead, whole fit", "range", "overhead, within",
                       "measurements", "HVPs in total", "HVPs per warm measurement, median (range)"],
                      rows))
    macs = data["overhead"].get("100", {}).get("matmul_accounting")
    if macs:
        o = data["overhead"]["100"]
        out.append(f"\nCounted in multiply-adds of matrix products, one HVP of this network is "
                   f"{macs['hvp_in_gradients']:.2f} GD steps and the factors a measurement builds once "
                   f"{macs['factors_in_gradients']:.2f}; the {o['total_hvps']} HVPs of the every=100 "
                   f"fit then come to {100 * macs['overhead']:.0f}% of the fit, and 40% would leave "
                   f"room for {macs['hvps_per_measurement_at_target']:.1f} HVPs per measurement.\n")

    audited = data.get("audited", {})
    summary = audited.get("summary")
    if summary:
        ref = s.get("reference", {})
        out.append(f"\n**Accuracy of the tracker** (every 100 steps; relative errors against a "
                   f"reference solve at tol {ref.get('tol', 'n/a')}):\n\n")
        rows = []
        for key, label in (("err_sharpness", "sharpness (lambda_1)"), ("err_eig_2", "eig_2"),
                           ("err_eig_3", "eig_3")):
            if key in summary:
                e = summary[key]
                rows.append([label, f"{e['median']:.1e}", f"{e['max']:.1e}"])
        out.append(_table(["eigenvalue", "median error", "max error"], rows))
        variants = audited.get("variants", {})
        if variants:
            hw = summary["hvps_warm"]
            rows = [["tracker (warm k=3, rest_tol=0.1)", f"{hw['median']:g}", f"{hw['max']:g}",
                     f"{summary['err_sharpness']['median']:.1e}", f"{summary['err_sharpness']['max']:.1e}"]]
            for name, v in variants.items():
                rows.append([name, f"{v['hvps']['median']:g}", f"{v['hvps']['max']:g}",
                             f"{v['err_sharpness']['median']:.1e}", f"{v['err_sharpness']['max']:.1e}"])
            out.append("\nVariants at the same points, each warm-started from its own previous "
                       "result:\n\n")
            out.append(_table(["variant", "HVPs median", "HVPs max", "sharpness error median",
                               "sharpness error max"], rows))

    h = data.get("hvp_cost")
    if h:
        iqr = h.get("hvp_per_gradient_iqr") or [None, None]
        out.append(f"\n**Cost of one HVP** at step {h['step']} (median of {h['repeats']} "
                   f"interleaved pairs): {h['hvp_per_gradient']:.2f} gradients (interquartile "
                   f"range {_fmt(iqr[0], '.2f')}-{_fmt(iqr[1], '.2f')}; one gradient "
                   f"{h['gradient_ms']:.1f} ms). Building what the products reuse (the R-operator's "
                   f"factors, or autograd's gradient graph): "
                   f"{h['graph_build_per_gradient']:.2f} gradients. One warm measurement: "
                   f"{h['measurement_hvps']} HVPs, {h['measurement_per_gradient']:.1f} gradients "
                   f"in all.\n")

    e = data.get("eigsh")
    if e and e.get("points"):
        out.append("\n**Against scipy** ``eigsh(k=2, which='LA', tol=0)`` (the protocol of Cohen "
                   "et al.) on the same HVP operator, fresh operator each:\n\n")
        rows = [[p["step"], f"{p['eigsh_hvps']:.0f}", f"{p['eigsh_seconds']:.2f}",
                 f"{p['eigsh_err_sharpness']:.1e}", f"{p['ours_hvps']:.0f}", f"{p['ours_seconds']:.2f}",
                 f"{p['ours_err_sharpness']:.1e}", f"{p['time_ratio']:.1f}x", f"{p['tight_hvps']:.0f}",
                 f"{p['tight_err_sharpness']:.1e}", f"{p['tight_time_ratio']:.1f}x"] for p in e["points"]]
        out.append(_table(["step", "eigsh HVPs", "eigsh s", "eigsh error", "tracker HVPs", "tracker s",
                           "tracker error", "speed-up", "tol 1e-6 HVPs", "tol 1e-6 error",
                           "speed-up at tol 1e-6"], rows))
        out.append(f"\nMedian speed-up: {e['median_time_ratio']:.1f}x at the tracker's tolerance, "
                   f"{e['median_tight_time_ratio']:.1f}x with the same warm solve at tol 1e-6, eigsh's "
                   "accuracy in float32 (the figure the target is judged by).\n")
    return "".join(out)


# -- bench_chunking.py --------------------------------------------------------------------
def chunking():
    for name in ("chunking.json", "chunking_quick.json"):
        file = RESULTS / name
        if file.exists():
            break
    else:
        return _missing("python benchmarks/bench_chunking.py", "benchmarks/results/chunking.json")
    data = json.loads(file.read_text())
    m = data["meta"]
    settings = (f"{m['n_samples']} x {m['n_features']} float32, MLP {m['n_features']}-"
                f"{'-'.join(map(str, m['hidden']))}-10 tanh, MSE, {m['threads']} torch thread(s), "
                f"{m['repeats']} repeats; torch {m['torch']}, Python {m['python']}, {m['machine']}.")
    rows = [[str(r["chunk_size"]), r["n_chunks"], f"{r['fit_mem_mib']:.0f}", f"{r['peak_mem_mib']:.0f}",
             f"{r['step_s']:.3f}", f"{r['step_rel']:.2f}", f"{r['hvp_s']:.3f}", f"{r['hvp_rel']:.2f}",
             f"{r['measurement_s']:.2f}", r["measurement_hvps"]] for r in data["rows"]]
    header = ["chunk_size", "chunks", "memory after 5 GD steps (MiB)",
              "memory after a measurement (MiB)", "GD step s", "step vs None", "HVP s",
              "HVP vs None", "measurement s", "HVPs"]
    return _source(m["command"], f"benchmarks/results/{file.name}", settings) + _table(header, rows)


# -- bench_gpu.py -------------------------------------------------------------------------
_GPU_ROWS = [  # (key, label, format)
    ("raw_step_ms", "raw torch GD step (ms)", ".2f"),
    ("estimator_step_ms", "EoSClassifier GD step, sharpness_every=0 (ms)", ".2f"),
    ("estimator_vs_raw", "EoSClassifier step / raw step", ".3f"),
    ("tracked_measurements", "measurements in the tracked fit (every=100, final included)", "d"),
    ("tracked_hvps", "HVPs in the tracked fit", "d"),
    ("tracking_overhead", "tracked fit time / untracked fit time - 1", ".1%"),
    ("hvp_cached_ms", "one HVP reusing the solve's cached factors (ms)", ".2f"),
    ("hvp_cached_over_raw_step", "that HVP / raw GD step", ".2f"),
    ("hvp_fresh_block1_ms", "one HVP on a fresh operator, block of 1 (ms)", ".2f"),
    ("hvp_fresh_block3_ms_per_hvp", "fresh operator, block of 3, per HVP (ms)", ".2f"),
    ("measurement_hvps", "HVPs of one cold top-3 measurement (tol 1e-3)", "d"),
    ("measurement_s", "wall time of that measurement (s)", ".3f"),
]


def gpu():
    files = sorted(RESULTS.glob("gpu*.json"), key=lambda f: (f.name != "gpu.json", f.name))
    files = [f for f in files if "quick" not in f.name] or files
    if not files:
        return _missing("python benchmarks/bench_gpu.py", "benchmarks/results/gpu.json")
    runs = [json.loads(f.read_text()) for f in files]
    parts = []
    for f, run in zip(files, runs):
        m = run["meta"]
        parts.append(f"* ``{m['command']}`` (``benchmarks/results/{f.name}``): {m['device']}, "
                     f"torch {m['torch']} (CUDA {m['cuda']}), {m['n_samples']} x 784 {m['dtype']}, "
                     f"MLP 784-{'-'.join(map(str, m['hidden']))}-10 tanh, MSE; fits of "
                     f"{max(m['steps'] // 4, 5)} and {m['steps'] + max(m['steps'] // 4, 5)} steps, "
                     f"HVP medians of {m['repeats']}.")
    header = ["quantity", *[f"``{run['meta']['command'].replace('python benchmarks/', '')}``"
                            for run in runs]]
    rows = [[label, *[_fmt(run["results"].get(key), spec) for run in runs]]
            for key, label, spec in _GPU_ROWS]
    return "\n".join(parts) + "\n\n" + _table(header, rows)


def write_tables():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("gd_step", gd_step), ("tracking", tracking), ("chunking", chunking),
                       ("gpu", gpu)):
        text = make()
        target = OUT / f"{name}.inc"
        if not target.exists() or target.read_text() != text:  # keep mtimes stable
            target.write_text(text)


if __name__ == "__main__":
    write_tables()
    for f in sorted(OUT.glob("*.inc")):
        print(f"==> {f}\n{f.read_text()}")
