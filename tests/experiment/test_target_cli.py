"""``jdeconv target``: a printable calibration target and its predicted conditioning."""

import numpy as np
import pytest

from jdeconv.experiment.cli import main


def test_target_binary_png_and_conditioning(tmp_path, capsys):
    out = tmp_path / "target.png"
    assert main(["target", "--size", "64", "--kind", "binary", "--seed", "0", "--kernel-size",
                 "7", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "condition number" in text and "effective rank 49 of 49" in text
    assert "identifiable True" in text
    from jdeconv.data import read_image

    img, info = read_image(out)
    assert img.shape == (64, 64) and info.bit_depth == 8
    assert sorted(set(np.unique(img).tolist())) == [0.0, 1.0]
    # the same seed gives the same target; a second write needs --overwrite
    assert main(["target", "--size", "64", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["target", "--size", "64", "--kind", "noise", "-o", str(out), "--overwrite",
                 "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert len(np.unique(read_image(out)[0])) > 2


@pytest.mark.parametrize("argv, message", [
    (["--kind", "binar"], "Did you mean 'binary'?"),
    (["--size", "0"], "target size '0' is not valid"),
    (["--size", "16", "-k", "31"], "kernel is larger than the 16x16 target"),
    (["-o", "t.jpg"], "must be a .png file"),
])
def test_target_bad_input(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["target", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("jdeconv: error:")
