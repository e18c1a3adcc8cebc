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
