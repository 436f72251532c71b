"""Tests for the YAML experiment configuration (jdeconv.experiment._config)."""

import pydantic
import pytest
import yaml

from jdeconv.experiment import Config, ConfigError, load_config
from jdeconv.experiment._config import MAX_CONFIG_BYTES, parse_override


def test_defaults_are_the_original_question():
    cfg = load_config(None)
    syn = cfg.data.synthetic
    assert (syn.image, syn.image_shape, syn.kernel, syn.kernel_params) == (
        "shapes", (256, 256), "gaussian", {"sigma": 2.0})
    assert cfg.data.files is None and cfg.data.batch == 1
    assert (cfg.model.mode, cfg.model.kernel_shape) == ("valid", (15, 15))
    assert (cfg.prior.name, cfg.solver.name, cfg.regularization) == ("simplex", "auto", None)
    assert cfg.sweep is None and cfg.sweep_points() == [({}, cfg)]


def test_frozen():
    cfg = load_config({})
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("raw, message", [
    ({"solver": {"max_iter": 3}}, "solver.max_iter: unknown key; did you mean 'max_iters'?"),
    ({"data": {"synthetic": {"nois": {}}}}, "data.synthetic.nois: unknown key; did you mean 'noise'?"),
    ({"regularization": {"smoth": 1e-3}}, "regularization.smoth: unknown key; did you mean 'smooth'?"),
    ({"modle": {}}, "modle: unknown key; did you mean 'model'?"),
])
def test_unknown_key_names_full_path_and_suggestion(raw, message):
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    assert str(e.value) == message


@pytest.mark.parametrize("raw, path, expected", [
    ({"solver": {"max_iters": "many"}}, "solver.max_iters", "expected an integer"),
    ({"solver": {"max_iters": 0}}, "solver.max_iters", "expected a value >= 1"),
    ({"solver": {"name": "fsta"}}, "solver.name", "did you mean 'fista'?"),
    ({"model": {"kernel_shape": "big"}}, "model.kernel_shape", "expected an int or a pair"),
    ({"model": {"kernel_shape": [15, 11, 3]}}, "model.kernel_shape", "expected 2 entries"),
    ({"model": {"mode": "vaild"}}, "model.mode", "did you mean 'valid'?"),
    ({"data": {"synthetic": {"noise": {"gaussian_sigma": -1}}}},
     "data.synthetic.noise.gaussian_sigma", "expected a value >= 0"),
    ({"data": {"synthetic": {"bits": 12}}}, "data.synthetic.bits", "expected one of 8 or 16"),
    ({"regularization": {"smooth": -1}}, "regularization.smooth", "expected a value >= 0"),
    ({"regularization": 5}, "regularization", "expected null, 'auto' or a mapping"),
    ({"outputs": {"plots": "maybe"}}, "outputs.plots", "expected true or false"),
    ({"data": {"files": {"original": "a.png"}}}, "data.files.blurred", "required key is missing"),
    ({"model": {"kernel_shape": 300}}, "model.kernel_shape", "larger than data.synthetic.image_shape"),
])
def test_wrong_type_or_range_names_path_and_expectation(raw, path, expected):
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    msg = str(e.value)
    assert msg.startswith(path + ":"), msg
    assert expected in msg
    assert "\n" not in msg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver: {name: [}\n")
    with pytest.raises(ConfigError, match="not valid YAML.*line 1"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_overrides_are_yaml_values():
    cfg = load_config({"solver": {"name": "gd"}}, [
        "solver.name=fista", "solver.max_iters=50", "model.kernel_shape=[7, 5]",
        "regularization.smooth=1e-3", "data.synthetic.image_options.n_shapes=4",
        "data.synthetic.noise.poisson_photons=1000"])
    assert cfg.solver.name == "fista" and cfg.solver.max_iters == 50
    assert cfg.model.kernel_shape == (7, 5)
    assert cfg.regularization_dict() == {"smooth": 1e-3}
    assert cfg.data.synthetic.image_options == {"n_shapes": 4}
    assert cfg.data.synthetic.noise.poisson_photons == 1000
    assert parse_override("regularization=auto") == ("regularization", "auto")
    assert load_config({}, ["regularization=null"]).regularization is None
    for bad, match in [("solver.max_iters", "expected key=value"),
                       ("solver.max_iter=3", "solver.max_iter: unknown key; did you mean 'max_iters'"),
                       ("model.kernel_shape.k=3", "is a value, not a section"),
                       ("solver.max_iters=[", "not valid YAML")]:
        with pytest.raises(ConfigError, match=match):
            load_config({}, [bad])


def test_kernel_params_default_follows_family_and_size():
    assert load_config({"data": {"synthetic": {"kernel": "box"}}}).data.synthetic.kernel_params == {}
    cfg = load_config({"model": {"kernel_shape": 30}, "data": {"synthetic": {"kernel": "gaussian"}}})
    assert cfg.data.synthetic.kernel_params == {"sigma": 4.0}


def test_round_trip_and_resolved(tmp_path):
    cfg = load_config({
        "name": "rt", "seed": 3, "model": {"kernel_shape": [7, 5], "mode": "same"},
        "data": {"synthetic": {"image": "noise", "image_shape": [40, 30], "bits": 16,
                               "noise": {"gaussian_sigma": 0.01}}, "batch": 2},
        "prior": {"name": "nonneg", "support": [[1] * 5] * 7},
        "regularization": {"tikhonov": 1e-4}, "solver": {"name": "fista", "tol": 1e-8},
        "sweep": {"solver.name": ["gd", "fista"]}})
    text = cfg.to_yaml()
    resolved = yaml.safe_load(text)
    assert resolved["solver"] == {"name": "fista", "max_iters": None, "tol": 1e-8, "dtype": None,
                                  "options": {}}
    assert resolved["outputs"]["warm_timing"] is False
    assert resolved["outputs"]["plots"] is True and resolved["model"]["kernel_shape"] == [7, 5]
    assert load_config(resolved) == cfg
    path = tmp_path / "rt.yaml"
    path.write_text(text)
    assert load_config(path) == cfg
    assert load_config(cfg) == cfg


def test_name_defaults_to_file_stem_and_paths_resolve_next_to_config(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text("data:\n  files: {original: x.png, blurred: y.png}\n")
    cfg = load_config(path)
    assert cfg.name == "pair"
    assert cfg.data.files.original == str(tmp_path / "x.png")
    assert cfg.data.synthetic is None


def test_data_source_rules():
    with pytest.raises(ConfigError, match="^data: give either files or synthetic"):
        load_config({"data": {"files": {"original": "a", "blurred": "b"}, "synthetic": {}}})
    with pytest.raises(ConfigError, match="^data: batch applies to synthetic data only"):
        load_config({"data": {"files": {"original": "a", "blurred": "b"}, "batch": 2}})


def test_sweep_points_cartesian_and_validated():
    cfg = load_config({"sweep": {"data.synthetic.noise.gaussian_sigma": [0, 0.01],
                                 "prior.name": ["none", "simplex"]}})
    points = cfg.sweep_points()
    assert [a for a, _ in points] == [
        {"data.synthetic.noise.gaussian_sigma": s, "prior.name": p}
        for s in (0, 0.01) for p in ("none", "simplex")]
    assert all(isinstance(c, Config) and c.sweep is None for _, c in points)
    assert points[3][1].data.synthetic.noise.gaussian_sigma == 0.01
    assert points[3][1].prior.name == "simplex"
    with pytest.raises(ConfigError, match="^sweep: solver.nme: unknown key; did you mean 'name'"):
        load_config({"sweep": {"solver.nme": ["gd"]}})
    with pytest.raises(ConfigError, match="sweep point solver.name=fsta: solver.name: .*did you mean 'fista'"):
        load_config({"sweep": {"solver.name": ["gd", "fsta"]}})
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config({"sweep": {"solver.name": []}})


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    names = sorted(p.stem for p in root.glob("*.yaml"))
    assert {"question_gd", "question_fista", "question_exact", "solver_comparison", "noise_sweep",
            "fourier_failure", "batch64", "real_rgb", "real_16bit", "real_off_centre",
            "real_gain_offset", "real_saturated"} <= set(names)
    for p in root.glob("*.yaml"):
        cfg = load_config(p)
        assert cfg.name == p.stem
        cfg.sweep_points()


# -- issue 13: bounds, names, paths -------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("solver.max_iters=1e23", "solver.max_iters: expected an integer of at most 10000000, got 1e+23"),
    ("solver.max_iters=1.0e+23", "solver.max_iters: expected an integer of at most 10000000"),
    ("solver.max_iters=.inf", "solver.max_iters: expected an integer of at most"),
    ("data.batch=1e9", "data.batch: expected an integer of at most 65536"),
    ("model.kernel_shape=100000", "model.kernel_shape: expected positive sizes of at most 4096"),
    ("data.synthetic.image_shape=[100000, 5]", "data.synthetic.image_shape: expected positive sizes"),
    ("data.synthetic.noise.gaussian_sigma=.inf", "gaussian_sigma: expected a finite number"),
    ("solver.tol=.nan", "solver.tol: expected a finite number"),
    ("name=../../elsewhere/x", "name: '../../elsewhere/x' is not a plain file name"),
    ("name=/tmp/x", "name: '/tmp/x' is not a plain file name"),
    ("name=.hidden", "is not a plain file name"),
])
def test_bounds_and_names_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config({}, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_1_1_scientific_integers_are_numbers():
    assert load_config({}, ["solver.max_iters=1e5"]).solver.max_iters == 100_000


def test_total_batch_pixels_bounded():
    with pytest.raises(ConfigError, match="data: batch 65536 of 4096x4096 images is too large"):
        load_config({"data": {"batch": 65536, "synthetic": {"image_shape": 4096}}})


@pytest.mark.parametrize("text, message", [
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nested too deeply"),
    ("x: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels deep"),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef")),
     "holds more than 100000 values"),
])
def test_hostile_yaml_is_refused_quickly(tmp_path, text, message):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_deep_dict_and_large_file_refused(tmp_path):
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        load_config({"data": {"synthetic": {"image_options": deep}}})
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="is larger than 1024 KiB"):
        load_config(big)


def test_sweep_size_bounded():
    with pytest.raises(ConfigError, match="sweep: 200 x 200 = 40000 points; at most 10000"):
        load_config({"sweep": {"seed": list(range(200)), "data.synthetic.noise.gaussian_sigma":
                               [0.0] * 200}})


def test_override_paths_resolve_against_the_current_directory(tmp_path, monkeypatch):
    confdir, cwd = tmp_path / "conf", tmp_path / "work"
    confdir.mkdir()
    cwd.mkdir()
    path = confdir / "pair.yaml"
    path.write_text("data:\n  files: {original: x.png, blurred: y.png}\nprior: {support: m.npy}\n")
    monkeypatch.chdir(cwd)
    cfg = load_config(path, ["data.files.original=x.npy", "prior.support=s.npy"])
    assert cfg.data.files.original == str(cwd / "x.npy")  # given on the command line
    assert cfg.data.files.blurred == str(confdir / "y.png")  # written in the file
    assert cfg.prior.support == str(cwd / "s.npy")
    cfg = load_config(path, ["data.files={original: a.png, blurred: b.png}"])
    assert (cfg.data.files.original, cfg.data.files.blurred) == (str(cwd / "a.png"), str(cwd / "b.png"))


def test_solver_options_and_warm_timing_default():
    cfg = load_config({"solver": {"name": "fista", "options": {"restart": False}}})
    assert cfg.solver.options == {"restart": False} and cfg.outputs.warm_timing is False
    assert load_config({}, ["solver.options.momentum=0.8"]).solver.options == {"momentum": 0.8}


def test_prior_typo_did_you_mean():
    with pytest.raises(ConfigError, match="prior.name: .*did you mean 'simplex'"):
        load_config({}, ["prior.name=simplx"])


# -- issue 12: real-like pairs --------------------------------------------------


def test_real_pair_keys_parse_and_round_trip(tmp_path):
    cfg = load_config({
        "model": {"mode": "same", "kernel_shape": "auto", "max_kernel_shape": 21, "gain": True,
                  "background": "plane", "loss": "huber", "orientation": "correlation",
                  "saturation": 0.98, "nan": "mask", "weights": "poisson"},
        "data": {"synthetic": {"kernel_shape": [9, 7], "kernel_offset": [3, -2], "gain": 0.95,
                               "offset": 0.01, "spots": 4, "spot_value": 3.0,
                               "saturation_level": 0.98, "bits": 16}, "channels": "rgb"}})
    m, syn = cfg.model, cfg.data.synthetic
    assert m.auto and m.kernel_shape == "auto" and m.max_kernel_shape == (21, 21)
    assert (m.gain, m.background, m.loss, m.orientation, m.saturation, m.nan, m.weights) == (
        True, "plane", "huber", "correlation", 0.98, "mask", "poisson")
    assert syn.kernel_offset == (3, -2) and cfg.truth_shape() == (15, 11)
    assert syn.kernel_params == {"sigma": 1.2}  # scaled to the box the kernel is made in
    assert load_config(yaml.safe_load(cfg.to_yaml())) == cfg
    assert load_config({}, ["model.background=2"]).model.background == 2
    assert load_config({}, ["model.background=constant"]).model.background == "constant"
    assert load_config({}, ["model.kernel_shape=15x11"]).model.kernel_shape == (15, 11)
    assert not load_config({}).model.auto and load_config({}).truth_shape() == (15, 15)
    sweep = load_config({"model": {"mode": "same"},
                         "sweep": {"model.background": ["none", "constant", 2]}})
    assert [c.model.background for _, c in sweep.sweep_points()] == ["none", "constant", 2]
    path = tmp_path / "files.yaml"
    path.write_text("data:\n  files: {original: x.png, blurred: y.npy, mask: m.png, weights: w.npy}\n"
                    "model: {kernel_shape: auto, mode: same}\n")
    files = load_config(path).data.files
    assert (files.mask, files.weights) == (str(tmp_path / "m.png"), str(tmp_path / "w.npy"))


@pytest.mark.parametrize("raw, message", [
    ({"model": {"kernel_shape": "aut"}}, "model.kernel_shape: expected an int or a pair like [15, 11], or auto"),
    ({"model": {"kernel_shape": [3, 4, 5]}}, "model.kernel_shape: expected 2 entries"),
    ({"model": {"background": "plan"}}, "model.background: expected none, constant, plane or a "
     "polynomial degree (an integer 0..10), got 'plan'; did you mean 'plane'?"),
    ({"model": {"background": 11}}, "model.background: expected none, constant, plane"),
    ({"model": {"background": True}}, "model.background: expected none, constant, plane"),
    ({"model": {"saturation": -0.5}}, "model.saturation: expected a value > 0"),
    ({"model": {"loss": "hubr"}}, "model.loss: expected one of 'l2', 'huber' or 'poisson', got 'hubr'; did you mean 'huber'?"),
    ({"model": {"orientation": "corr"}}, "did you mean 'correlation'?"),
    ({"model": {"nan": "msk"}}, "model.nan: expected one of 'raise' or 'mask'"),
    ({"model": {"weights": "poison"}}, "did you mean 'poisson'?"),
    ({"model": {"gian": True}}, "model.gian: unknown key; did you mean 'gain'?"),
    ({"model": {"gain": "yes please"}}, "model.gain: expected true or false"),
    ({"data": {"files": {"original": "a", "blurred": "b", "maks": "m"}}},
     "data.files.maks: unknown key; did you mean 'mask'?"),
    ({"data": {"synthetic": {"saturation": 0.9}}},
     "data.synthetic.saturation: unknown key; did you mean 'saturation_level'?"),
    ({"model": {"max_kernel_shape": 21}}, "model.max_kernel_shape: applies only with model.kernel_shape: auto"),
    ({"model": {"kernel_shape": "auto", "max_kernel_shape": 21}, "data": {"synthetic": {"kernel_shape": 9}}},
     "model.max_kernel_shape: has no effect in mode 'valid'"),
    ({"model": {"kernel_shape": "auto"}}, "data.synthetic.kernel_shape: required when model.kernel_shape is auto"),
    ({"model": {"kernel_shape": "auto", "mode": "same"}, "prior": {"support": [[1]]},
      "data": {"synthetic": {"kernel_shape": 9}}}, "prior.support: a support mask needs a fixed"),
    ({"data": {"synthetic": {"kernel_offset": [1, 0]}}},
     "model.kernel_shape: [15, 15] differs from the true kernel's box [17, 15]"),
    ({"data": {"synthetic": {"kernel_offset": "up"}}}, "data.synthetic.kernel_offset: expected an int or a pair"),
    ({"data": {"synthetic": {"kernel_offset": [10**6, 0]}}}, "expected offsets of at most 4096 pixels"),
    ({"model": {"mode": "same"}, "data": {"synthetic": {"image_shape": 20, "kernel_shape": 9,
                                                        "kernel_offset": 6}}},
     "data.synthetic.kernel_shape: the true kernel's box [21, 21] is larger than"),
    ({"data": {"synthetic": {"gain": 0}}}, "data.synthetic.gain: expected a value > 0"),
    ({"data": {"synthetic": {"spots": -1}}}, "data.synthetic.spots: expected a value >= 0"),
    ({"data": {"synthetic": {"saturation_level": 0}}}, "data.synthetic.saturation_level: expected a value > 0"),
    ({"data": {"channels": "rgb", "batch": 2}}, "data: channels: rgb estimates one kernel per channel"),
    ({"data": {"channels": "cmyk"}}, "data.channels: expected one of 'gray' or 'rgb'"),
    ({"model": {"weights": "poisson"}, "data": {"files": {"original": "a", "blurred": "b",
                                                          "weights": "w.npy"}}},
     "model.weights: give either model.weights: poisson or data.files.weights"),
])
def test_real_pair_mistakes_are_one_line(raw, message):
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_names_and_bounds_are_the_engines():
    import typing

    from jdeconv import _names, _weighted_gram
    from jdeconv.experiment import _config, cli

    fields = _config.ModelConfig.model_fields
    assert typing.get_args(fields["loss"].annotation) == _names.LOSSES
    assert typing.get_args(fields["orientation"].annotation) == _names.ORIENTATIONS
    assert typing.get_args(fields["nan"].annotation) == _names.NAN_POLICIES
    assert tuple(_weighted_gram.BACKGROUNDS) == _names.BACKGROUNDS
    from jdeconv import _estimate, _problem

    assert _estimate.LOSSES == _names.LOSSES and _estimate.ORIENTATIONS == _names.ORIENTATIONS
    assert _problem.NAN_POLICIES == _names.NAN_POLICIES
    assert (_config.MAX_BACKGROUND_DEGREE == cli.MAX_BACKGROUND_DEGREE
            == _weighted_gram._MAX_BACKGROUND_DEGREE)
