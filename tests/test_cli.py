import subprocess
import sys

import pytest

from segnet.cli import main

MODELS = [
    "segnet", "bayesian_segnet", "segnet_basic", "bayesian_segnet_basic", "segnet_basic_encoder_addition",
    "segnet_basic_single_channel_decoder", "bilinear_interpolation", "fcn_basic", "fcn_basic_no_addition",
    "fcn_basic_no_dim_reduction", "fcn_basic_no_addition_no_dim_reduction", "fcn8s", "fcn_bilinear", "deeplab_largefov",
    "deconvnet",
]


@pytest.mark.slow
def test_models_prints_every_model_with_parameters(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert float(line.split()[1]) > 0.5
    assert "29.449" in out


def test_forward_smoke(capsys):
    assert main(["forward", "--model", "segnet_basic", "--size", "45x61"]) == 0
    assert "(1, 11, 45, 61)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["forward", "--model", "nope"], "unknown model"),
        (["forward", "--size", "10x10", "--model", "segnet"], "at least 17x17"),
        (["forward", "--size", "big"], "HEIGHTxWIDTH"),
        (["models", "--num-classes", "0"], "positive integer"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_error(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_help_everywhere(capsys):
    # one real process, for `python -m segnet` itself; the rest in process
    result = subprocess.run([sys.executable, "-m", "segnet", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage:" in result.stdout
    for argv in (["models", "--help"], ["forward", "--help"]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 0 and "usage:" in capsys.readouterr().out


def test_data_weights_prints_mfb_table(capsys, tmp_path):
    assert main(["data", "weights", "--dataset", "synthetic", "--cache", str(tmp_path / "w.json")]) == 0
    out = capsys.readouterr().out
    for name in ("sky", "building", "pole", "road", "pavement", "car"):
        assert name in out
    assert (tmp_path / "w.json").is_file()


@pytest.mark.slow
def test_data_weights_on_real_camvid(capsys, camvid_root):
    assert main(["data", "weights", "--dataset", "camvid", "--root", str(camvid_root)]) == 0
    rows = {line.split()[1]: float(line.split()[3]) for line in capsys.readouterr().out.splitlines()
            if line[:3].strip().isdigit()}
    assert len(rows) == 11
    assert rows["Bicyclist"] > rows["Pedestrian"] > rows["Pole"] > 1 > rows["Road"]


def test_data_check_and_pack(capsys, tmp_path):
    assert main(["data", "check", "--dataset", "synthetic", "--splits", "val"]) == 0
    assert "no problems found" in capsys.readouterr().out
    out = tmp_path / "s.pack"
    assert main(["data", "pack", "--dataset", "synthetic", "--splits", "val", "--out", str(out)]) == 0
    assert out.is_file()
    assert "\r" not in capsys.readouterr().err  # no progress bar when stderr is a log file, not a terminal
    assert main(["data", "check", "--dataset", "synthetic", "--root", str(out), "--splits", "val"]) == 0
    assert main(["data", "check", "--dataset", "camvid", "--root", str(tmp_path / "nowhere")]) == 3
    assert "nowhere: no such dataset folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # a folder that is there but holds no CamVid: a problem per split
    assert main(["data", "check", "--dataset", "camvid", "--root", str(tmp_path / "empty")]) == 1
    assert "not found" in capsys.readouterr().out
