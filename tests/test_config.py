import pytest

from learnscope.config import build_config, describe, load_toml, parse_assignments
from learnscope.errors import ConfigError
from learnscope.studies.double_descent import DoubleDescentConfig
from learnscope.studies.random_labels import RandomLabelsConfig


def test_defaults_and_overrides_in_order():
    cfg = build_config(DoubleDescentConfig, {"seeds": 2},
                       {"seeds": "4", "feature_ratios": "0.05,1,3"})
    assert cfg.seeds == 4 and cfg.feature_ratios == (0.05, 1.0, 3.0)
    assert cfg.grid(cfg.feature_ratios, cfg.n_train) == [5, 100, 300]
    assert build_config(DoubleDescentConfig).n_train == 100


@pytest.mark.parametrize("raw", ["[0.2, 1,9]", "0.2,1,9", [0.2, 1, 9], [0.2, 1.0, 9]])
def test_tuple_parsing(raw):
    cfg = build_config(DoubleDescentConfig, {"sample_ratios": raw, "samplewise_features": 5})
    assert cfg.sample_ratios == (0.2, 1.0, 9.0)
    assert cfg.grid(cfg.sample_ratios, cfg.samplewise_features) == [1, 5, 45]


@pytest.mark.parametrize("layer,match", [
    ({"nope": 1}, "unknown config field 'nope'"),
    ({"n_train": "abc"}, "field 'n_train' expects int"),
    ({"n_train": "2.5"}, "field 'n_train' expects int"),
    ({"n_train": -5}, "field 'n_train' must be >= 2"),
    ({"noise_sd": "nan"}, "field 'noise_sd' must be finite"),
    ({"feature_ratios": "0.5,2"}, "at least 3 values"),
    ({"feature_ratios": "2,3,4"}, "must span 1, the interpolation threshold"),
    ({"n_train": True}, "expects int"),
])
def test_bad_values_name_the_field(layer, match):
    with pytest.raises(ConfigError, match=match):
        build_config(DoubleDescentConfig, layer)


def test_bounds_on_elements_and_choices():
    with pytest.raises(ConfigError, match="noise_levels' must be <= 1"):
        build_config(RandomLabelsConfig, {"noise_levels": "0,0.5,1.2"})
    with pytest.raises(ConfigError, match="one of sgd, adam"):
        build_config(RandomLabelsConfig, {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="must contain 0"):
        build_config(RandomLabelsConfig, {"noise_levels": "0.5,1"})
    cfg = build_config(RandomLabelsConfig, {"gaussian_pixels": "no"})
    assert cfg.gaussian_pixels is False


def test_parse_assignments():
    assert parse_assignments(["a=1", "b-c=2,3"]) == {"a": "1", "b_c": "2,3"}
    with pytest.raises(ConfigError, match="field=value"):
        parse_assignments(["novalue"])


def test_toml(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text("seeds = 2\nfeature_ratios = [0.1, 1, 3]\n")
    assert build_config(DoubleDescentConfig, load_toml(good)).feature_ratios == (0.1, 1.0, 3.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    table = tmp_path / "t.toml"
    table.write_text("[double-descent]\nseeds = 2\n")
    with pytest.raises(ConfigError, match="unexpected table"):
        load_toml(table)


def test_describe_lists_every_field():
    names = [f.name for f in describe(RandomLabelsConfig)]
    assert names[:2] == ["seeds", "seed"] and "noise_levels" in names
    assert all(f.help for f in describe(RandomLabelsConfig))
