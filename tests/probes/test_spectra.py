"""WeightSpectrumProbe: Tracy-Widom spikes with their significance, the bulk noise variance,
and power-law fits that say when they are not reliable."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learnscope.measures.spectra import bbp_spike_location
from learnscope.probes import WeightSpectrumProbe
from learnscope.probes.base import ProbeContext

torch.set_num_threads(1)


def _net(seed: int) -> nn.Sequential:
    """Layer "0": 2000 x 500, unit noise plus three planted spikes (l = 3, 5, 10); layer "1":
    a 10 x 2000 Gaussian (10 eigenvalues: too few for a power law)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(500, 2000, bias=False), nn.Linear(2000, 10, bias=False))
    strengths = torch.tensor([3.0, 5.0, 10.0], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(2000, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(500, 3, generator=g, dtype=torch.float64))
    w0 = torch.randn(2000, 500, generator=g, dtype=torch.float64)
    w0 = w0 + math.sqrt(2000) * (u * strengths.sqrt()) @ v.T
    with torch.no_grad():
        net[0].weight.copy_(0.1 * w0)  # noise variance 0.01
        net[1].weight.copy_(torch.randn(10, 2000, generator=g))
    return net


def _measure(probe: WeightSpectrumProbe, net: nn.Module) -> dict[tuple[str, str], object]:
    ctx = ProbeContext(model=net, step=0, epoch=0, inputs=None, targets=None,
                       init_state={k: v.detach().clone() for k, v in net.named_parameters()})
    return {(r.key, r.meta.get("layer", r.meta.get("parameter"))): r
            for r in probe.measure(ctx)}


def test_probe_records_spikes_variance_and_significance():
    recs = _measure(WeightSpectrumProbe(), _net(0))
    spikes = recs[("mp_spikes", "0")]
    assert spikes.value == 3
    assert spikes.meta["significance"] == 0.05
    assert spikes.meta["sigma2_method"] == "bulk"
    sigma2 = recs[("mp_sigma2", "0")]
    assert sigma2.value == pytest.approx(0.01, rel=0.01)
    assert recs[("mp_lambda_plus", "0")].value == pytest.approx(0.01 * 2.25, rel=0.01)
    # the threshold sits between the bulk edge and the weakest planted spike
    assert 0.0225 < spikes.meta["spike_threshold"] < 0.01 * bbp_spike_location(3.0, 0.25)
    assert recs[("lambda_max", "0")].value == pytest.approx(
        0.01 * bbp_spike_location(10.0, 0.25), rel=0.1)


def test_probe_flags_unreliable_power_law_fits():
    recs = _measure(WeightSpectrumProbe(), _net(1))
    small = recs[("alpha", "1")]
    assert small.meta["n_tail"] == 10
    assert small.meta["reliable"] is False
    assert "tail of 10 eigenvalues < 50" in small.meta["reason"]
    big = recs[("alpha", "0")]
    assert isinstance(big.meta["reliable"], bool)
    assert big.meta["reliable"] == (big.meta["n_tail"] >= 50 and big.meta["reason"] == "")


def test_probe_arguments_are_checked_and_recorded():
    probe = WeightSpectrumProbe(significance=0.01, min_reliable_tail=5)
    assert probe.params()["significance"] == 0.01
    assert probe.params()["min_reliable_tail"] == 5
    recs = _measure(probe, _net(2))
    assert recs[("mp_spikes", "0")].meta["significance"] == 0.01
    assert recs[("mp_spikes", "0")].value == 3
    assert recs[("alpha", "1")].meta["reliable"] == (recs[("alpha", "1")].meta["reason"] == "")
    with pytest.raises(ValueError, match="significance"):
        WeightSpectrumProbe(significance=0.7)
    with pytest.raises(ValueError, match="min_reliable_tail"):
        WeightSpectrumProbe(min_reliable_tail=1)
