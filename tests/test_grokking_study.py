"""The grokking study's helpers: evaluation schedule, milestones, the denormal switch, and one
tiny stacked training run."""

import math

import pytest
import torch

from learnscope.errors import ConfigError
from learnscope.studies.base import Trial
from learnscope.studies.grokking import (
    GrokkingConfig,
    _summary,
    denormals_flushed,
    eval_steps,
    first_step,
    flushing_denormals,
    train_seed,
)


def test_eval_schedule_is_dense_early_then_regular():
    assert eval_steps(200, 50) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75,
                                   80, 85, 90, 95, 100, 150, 200]
    assert eval_steps(30, 10) == [5, 10, 15, 20, 25, 30]
    assert eval_steps(130, 60)[-3:] == [100, 120, 130]


def test_first_step_reaching_a_level():
    assert first_step([5, 10, 15], [0.1, 0.99, 1.0], 0.99) == 10.0
    assert math.isnan(first_step([5, 10], [0.1, 0.2], 0.5))


def test_milestones_of_a_hand_made_run():
    steps = [0, 10, 20, 30, 40, 50]
    curves = {"train_acc": [0.0, 0.5, 1.0, 1.0, 1.0, 1.0],
              "test_acc": [0.0, 0.0, 0.0, 0.02, 0.3, 0.97],
              "train_loss": [4.0] * 6,
              "fourier": [0.1, 0.1, 0.2, 0.35, 0.5, 0.8],
              "weight_norm": [10.0, 12.0, 11.0, 10.5, 11.5, 11.0]}
    s = _summary(steps, curves, 50)
    assert (s["step_memorised"], s["step_test10"], s["step_test50"], s["step_test95"]) == \
        (20.0, 40.0, 50.0, 50.0)
    assert s["test_at_memorised"] == 0.0 and s["test_max"] == 0.97
    assert s["delay_ratio"] == 2.5
    assert s["fourier_gain_test10"] == pytest.approx(0.5 / 0.2)
    assert s["test_at_chance_end"] == 0.02  # the last evaluation at most 0.05 (step 30)
    assert s["fourier_gain_at_chance"] == pytest.approx(0.35 / 0.2)
    assert (s["norm_at_memorised"], s["norm_at_test10"], s["norm_at_test95"]) == \
        (11.0, 11.5, 11.0)
    assert s["norm_peak_step"] == 10.0
    never = _summary(steps, curves | {"test_acc": [0.0] * 6}, 50)
    assert math.isnan(never["step_test50"]) and never["step_test50_censored"] == 50.0
    assert math.isnan(never["delay_ratio"]) and math.isnan(never["norm_at_test95"])


@pytest.mark.parametrize("start", [False, True])
def test_denormal_flushing_is_scoped(start):
    torch.set_flush_denormal(start)
    try:
        assert denormals_flushed() is start
        with flushing_denormals():
            assert denormals_flushed()
            tiny = torch.full((8,), 1e-39)
            assert (tiny * torch.ones(8) == 0).all()
        assert denormals_flushed() is start
    finally:
        torch.set_flush_denormal(False)


def test_tiny_stack_trains_each_weight_decay():
    """The weight decays of a seed train as one stack: each model gets its own decay (the
    decayed ones end with smaller weights), memorises its training pairs, and the denormal
    setting is left as it was."""
    cfg = GrokkingConfig(seeds=1, p=11, hidden=32, steps=150, eval_every=25,
                         weight_decays=(1.0, 0.0))
    before = denormals_flushed()
    outputs = train_seed(cfg, [Trial({"part": "train", "wd": w, "seed": 0}) for w in (1.0, 0.0)])
    assert denormals_flushed() == before
    final = [{r.key: r.value for r in o.records if r.step == 150} for o in outputs]
    assert all(f["train_acc"] == 1.0 for f in final)
    assert final[0]["weight_norm"] < final[1]["weight_norm"]
    summary = [{r.key: r.value for r in o.records if r.probe == "summary"} for o in outputs]
    assert all(0 < s["step_memorised"] <= 150 for s in summary)
    steps = sorted({r.step for r in outputs[0].records if r.key == "fourier"})
    assert steps == eval_steps(150, 25)


def test_config_needs_decay_one_and_zero():
    with pytest.raises(ConfigError):
        GrokkingConfig(weight_decays=(0.3, 0.0)).check()
    GrokkingConfig(weight_decays=(0.0, 1.0)).check()
