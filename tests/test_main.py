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
    assert "from step 30 on, the sharpness is" in out
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
                                           ("x.v2", "cannot write '.v2' files")])
def test_bad_plot_paths_are_refused_before_the_fit(name, message, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["--max-iter", "30", "--plot", name])
    captured = capsys.readouterr()
    assert message in captured.err and "fit:" not in captured.out
