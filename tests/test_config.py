import pytest

from learnscope.config import build_config, describe, load_toml, parse_assignments
from learnscope.errors import ConfigError
from learnscope.studies.double_descent import DoubleDescentConfig
from learnscope.studies.random_labels import RandomLabelsConfig


def test_defaults_and_overrides_in_order():
    cfg = build_config(DoubleDescentConfig, {"seeds": 2}, {"seeds": "4", "features": "5,100,300"})
    assert cfg.seeds == 4 and cfg.features == (5, 100, 300)
    assert build_config(DoubleDescentConfig).n_train == 100


@pytest.mark.parametrize("raw", ["[2, 5,9]", "2,5,9", [2, 5, 9], [2.0, 5, 9]])
def test_tuple_parsing(raw):
    cfg = build_config(DoubleDescentConfig, {"sample_sizes": raw, "samplewise_features": 3})
    assert cfg.sample_sizes == (2, 5, 9)


@pytest.mark.parametrize("layer,match", [
    ({"nope": 1}, "unknown config field 'nope'"),
    ({"n_train": "abc"}, "field 'n_train' expects int"),
    ({"n_train": "2.5"}, "field 'n_train' expects int"),
    ({"n_train": -5}, "field 'n_train' must be >= 2"),
    ({"noise_sd": "nan"}, "field 'noise_sd' must be finite"),
    ({"features": "10,20"}, "at least 3 values"),
    ({"features": "200,300,400"}, "must span n_train"),
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
    good.write_text("seeds = 2\nfeatures = [10, 100, 300]\n")
    assert build_config(DoubleDescentConfig, load_toml(good)).features == (10, 100, 300)
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
