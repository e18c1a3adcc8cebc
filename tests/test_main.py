"""The main job, ``python -m sklearn_eos``, on a short run."""

import pytest

from sklearn_eos.__main__ import main


def test_main_job_reports_what_it_measured_and_saves_both_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    clf = main(["--max-iter", "30", "--sharpness-every", "10", "--verbose", "0",
                "--plot", str(tmp_path / "eos")])
    out = capsys.readouterr().out
    assert clf.n_iter_ == 30
    # fewer steps than the 200 the summary normally starts at: it names the step it used
    assert "at step 30, the sharpness is" in out
    # no extension given: matplotlib writes .png, and the message names the files written
    assert (tmp_path / "eos.png").is_file() and (tmp_path / "eos_rotation.png").is_file()
    assert f"plots saved to {tmp_path / 'eos.png'} and {tmp_path / 'eos_rotation.png'}" in out


def test_main_job_without_tracking_saves_the_sharpness_plot_only(tmp_path, capsys):
    """RotationDisplay raises for a fit with no rotation rows: the job skips that plot."""
    pytest.importorskip("matplotlib")
    main(["--max-iter", "5", "--sharpness-every", "0", "--verbose", "0", "--plot", str(tmp_path / "eos")])
    out = capsys.readouterr().out
    assert (tmp_path / "eos.png").is_file() and not (tmp_path / "eos_rotation.png").exists()
    assert "no rotation plot: --sharpness-every 0 records no rotation" in out
    # no table header over no rows, no empty list of episodes
    assert "sharpness_history_: no measurements (--sharpness-every 0)" in out
    assert "sharpness_history_ (top" not in out
    assert "0 loss-based instability episodes" in out and "first ones" not in out


def test_one_measurement_in_the_summary_window_is_one_ratio(capsys):
    """A window holding one measurement prints its ratio once ('at step 200, ... 0.146x'),
    not a range from it to itself; this rate reaches no instability, so no episode list."""
    clf = main(["--lr", "0.05", "--max-iter", "20", "--sharpness-every", "20", "--verbose", "0"])
    out = capsys.readouterr().out
    ratio = clf.sharpness_history_["sharpness"][-1] / clf.sharpness_history_["threshold"][-1]
    assert f"at step 20, the sharpness is {ratio:.3f}x the threshold 2/lr" in out
    assert " to " not in out.split("at step 20")[1].split("\n")[0]


def test_a_decay_at_step_0_is_announced_with_the_rate_every_step_runs_at(capsys):
    """The banner announced lr 0.5 and its threshold while every step ran at 0.05."""
    clf = main(["--decay-time", "0", "--max-iter", "3", "--sharpness-every", "0", "--verbose", "0"])
    out = capsys.readouterr().out
    assert (clf.lr_history_ == 0.05).all()
    assert "lr=0.5 (threshold 2/lr = 4), decayed at step 0 to 0.05\n" in out
    main(["--max-iter", "3", "--sharpness-every", "0", "--verbose", "0"])
    assert "lr=0.5 (threshold 2/lr = 4)\n" in capsys.readouterr().out


def test_a_ratio_far_past_the_edge_is_printed_in_three_digits(capsys):
    """lr 100 for 5 steps: the loss grows to 1e24 without a divergence and the ratio was
    printed with 31 digits before the point."""
    with pytest.warns(UserWarning, match="training started far beyond the edge of stability"):
        clf = main(["--lr", "100", "--max-iter", "5", "--sharpness-every", "2", "--verbose", "0"])
    out = capsys.readouterr().out
    ratio = clf.sharpness_history_["sharpness"][-1] / clf.sharpness_history_["threshold"][-1]
    assert ratio > 1e3
    assert f"at step 5, the sharpness is {ratio:.3g}x the threshold 2/lr" in out


@pytest.mark.parametrize("text, expected", [("0", 0), ("20", 20), ("20.0", 20), ("2e1", 20), ("0.5", 0.5)])
def test_decay_time_is_a_step_when_it_is_an_int(text, expected):
    clf = main(["--max-iter", "30", "--sharpness-every", "0", "--verbose", "0", "--decay-time", text])
    assert clf.decay_time == expected and type(clf.decay_time) is type(expected)
    assert clf.decay_step_ == (expected if isinstance(expected, int) else 15)


@pytest.mark.parametrize("text", ["1.5", "-1", "x"])
def test_a_decay_time_that_is_neither_is_refused_before_any_training(text, capsys):
    with pytest.raises(SystemExit):  # 1.5 used to become step 1
        main(["--max-iter", "30", "--verbose", "0", f"--decay-time={text}"])
    assert "--decay-time" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "-0.5", "inf", "nan", "x"])
def test_a_bad_learning_rate_is_refused_before_any_training(text, capsys):
    with pytest.raises(SystemExit):  # 0 used to end in a ZeroDivisionError from the banner
        main(["--max-iter", "30", "--verbose", "0", f"--lr={text}"])
    assert "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [(".png", "needs a file name"), ("nodir/x.png", "does not exist"),
                                           ("x.v2", "cannot write '.v2' files"),
                                           ("x.pgf", "cannot write '.pgf' files"),
                                           ("d.png", "'d.png' is a folder"),
                                           ("e.png", "'e_rotation.png' is a folder")])
def test_bad_plot_paths_are_refused_before_the_fit(name, message, tmp_path, monkeypatch, capsys):
    """.pgf (it needs LaTeX) and a name that is a folder failed in savefig after the whole
    fit (an audit)."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.png").mkdir()
    (tmp_path / "e_rotation.png").mkdir()
    with pytest.raises(SystemExit):
        main(["--max-iter", "30", "--plot", name])
    captured = capsys.readouterr()
    assert message in captured.err and "fit:" not in captured.out


@pytest.mark.parametrize("option, text", [
    ("--max-iter", "0"), ("--max-iter", "-5"), ("--sharpness-every", "-1"), ("--verbose", "-1"),
    ("--random-state", "-1"), ("--max-iter", "x"), ("--random-state", str(2**32)),
])
def test_bad_counts_are_refused_before_any_training(option, text, capsys):
    """They passed argparse and ended in the estimator's InvalidParameterError with a
    traceback (exit 1) where --lr gets argparse's message (exit 2; CLI audit)."""
    with pytest.raises(SystemExit) as stop:
        main([f"{option}={text}", "--verbose", "0"])
    assert stop.value.code == 2 and option in capsys.readouterr().err


def test_a_plot_folder_that_takes_no_files_is_refused_before_the_fit(tmp_path, monkeypatch, capsys):
    """--plot /proc/x.png passed the existence check, the fit ran, and saving failed with a
    traceback (CLI audit). A folder where no file can be created is refused first."""
    pytest.importorskip("matplotlib")
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(SystemExit):
        main(["--max-iter", "30", "--plot", str(tmp_path / "x.png")])
    captured = capsys.readouterr()
    assert "cannot write to the folder" in captured.err and "fit:" not in captured.out


def test_summaries_cover_the_steps_before_a_decay_and_a_missing_rotation_plot_says_why(tmp_path, capsys):
    """After a decay the threshold is 10x larger: the summary line read 0.13x-0.22x with 'it
    hovers near 1' and quoted 2/lr of the initial rate; and a fit that ended before its second
    measurement was said to have --sharpness-every 0 (CLI audit)."""
    pytest.importorskip("matplotlib")
    import numpy as np

    clf = main(["--max-iter", "300", "--sharpness-every", "50", "--decay-time", "250", "--verbose", "0"])
    out = capsys.readouterr().out
    sh = clf.sharpness_history_
    kept = (sh["step"] >= 200) & (sh["step"] < 250)
    assert clf.decay_step_ == 250 and sh["threshold"][-1] == 40  # the last row is after the decay
    ratio = sh["sharpness"][kept] / sh["threshold"][kept]
    assert kept.sum() == 1  # one measurement in the window: its ratio, once
    assert f"at step 200, before the decay at step 250, the sharpness is {ratio[0]:.3f}x the threshold" in out
    assert np.all(sh["threshold"][kept] == 4)
    with pytest.warns(Warning, match="diverged"):
        main(["--max-iter", "5", "--lr", "1e30", "--verbose", "0", "--plot", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "no rotation plot: the fit ended before a second measurement" in out


def test_plot_without_matplotlib_is_refused_before_the_fit(tmp_path, monkeypatch, capsys):
    """It ended in a bare ModuleNotFoundError traceback (display audit, hD/bug_02)."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as stop:
        main(["--max-iter", "1", "--plot", str(tmp_path / "x.png")])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "--plot needs matplotlib" in captured.err and "fit:" not in captured.out


def test_tables_print_steps_exactly():
    """Every column had the .4g format: step 10025 printed as 1.002e+04 (display audit,
    hD/bug_04)."""
    import numpy as np

    from sklearn_eos.__main__ import _table

    out = _table({"step": np.array([9975, 10025]), "sharpness": np.array([4.123456, 4.2])})
    assert "10025" in out and "1.002e+04" not in out and "4.123" in out and "4.123456" not in out


def test_an_empty_plot_name_is_refused_before_the_fit(capsys):
    """``--plot ''`` wrote nothing, silently, where ``--plot .png`` was refused (audit B of
    session 37)."""
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as exit_info:
        main(["--max-iter", "2", "--sharpness-every", "0", "--verbose", "0", "--plot", ""])
    assert exit_info.value.code == 2
    assert "--plot needs a file name, got ''" in capsys.readouterr().err


def test_a_fit_with_no_measurement_in_the_summary_window_says_so(capsys):
    """A diverged five-step fit measured at steps 0-3, before the window (from step
    min(200, n_iter_)): the summary line vanished without a word, and the final loss was
    printed with 29 digits before the point (audit B of session 37)."""
    with pytest.warns(Warning):
        clf = main(["--lr", "1e4", "--max-iter", "5", "--sharpness-every", "1", "--verbose", "0"])
    out = capsys.readouterr().out
    assert clf.diverged_ and clf.sharpness_history_["step"].max() < clf.n_iter_
    assert f"(no measurement from step {clf.n_iter_} on, where the summary of the sharpness" in out
    assert f"-> {clf.loss_curve_[-1]:.4g} (min" in out and "0000 (min" not in out
