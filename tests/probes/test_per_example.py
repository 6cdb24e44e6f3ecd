"""PerExampleProbe: eval-pass per-example dynamics inside a training loop."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from learnscope import Scope
from learnscope.data import mnist1d
from learnscope.data.corruptions import flip_labels
from learnscope.measures.per_example import PerExampleTracker, detection_auroc
from learnscope.models import mlp
from learnscope.probes import at_end, every
from learnscope.probes.per_example import PerExampleProbe
from learnscope.seeding import torch_generator
from learnscope.testing import assert_same_model

torch.set_num_threads(1)

N, EPOCHS, BATCH = 96, 5, 16


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 6, generator=g)
    y_clean = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes
    noisy = torch.zeros(N, dtype=torch.bool)
    noisy[torch.randperm(N, generator=g)[:12]] = True
    y = torch.where(noisy, (y_clean + 1) % 3, y_clean)
    return x, y, noisy


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(32, 3))


def _train(net, x, y, scope=None, snapshots=None, seed=0):
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    torch.manual_seed(seed)  # batch order and dropout masks
    if snapshots is not None:
        snapshots.append(copy.deepcopy(net.state_dict()))
    for _ in range(EPOCHS):
        for idx in torch.randperm(N).split(BATCH):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if scope is not None:
                scope.step(loss)
        if scope is not None:
            scope.epoch()
        if snapshots is not None:
            snapshots.append(copy.deepcopy(net.state_dict()))
    return net


def _values(recs, key, **meta):
    return [r for r in recs if r.key == key and all(r.meta.get(k) == v for k, v in meta.items())]


def test_runs_in_a_training_loop_and_emits_keys_per_epoch():
    x, y, noisy = _data()
    net = _model()
    probe = PerExampleProbe(x, y, noisy_mask=noisy, top_k=10, batch_size=40)
    xv, yv = x[:8], y[:8]
    scope = Scope(net, [probe], data=(xv, yv), out=None)
    _train(net, x, y, scope)
    scope.close()
    steps_per_epoch = math.ceil(N / BATCH)
    expected = [e * steps_per_epoch for e in range(EPOCHS + 1)]
    recs = scope.records
    for subset in ("all", "noisy", "clean"):
        assert [r.step for r in _values(recs, "fraction_correct", subset=subset)] == expected
    for key in ("mean_margin", "mean_prob_true"):
        assert [r.step for r in _values(recs, key)] == expected
    assert [r.meta["epoch"] for r in _values(recs, "mean_margin")] == list(range(EPOCHS + 1))
    r0 = _values(recs, "fraction_correct", subset="all")[0]
    assert r0.meta["source"] == "eval" and "not online" in r0.meta["pass"]
    last = expected[-1]
    for key in ("n_never_learned", "mean_learned_epoch", "n_forgetting_events",
                "n_forgotten_examples", "suspicious_precision_at_k", "suspicious_auroc"):
        (r,) = _values(recs, key)
        assert r.step == last and math.isfinite(r.value)
    sus = _values(recs, "suspicious_example")
    assert [r.meta["rank"] for r in sus] == list(range(10))
    assert all(r.step == last for r in sus)
    assert {"score", "method", "aum", "fit_weighted_aum", "confidence", "variability",
            "learned_epoch", "forgetting"} <= set(sus[0].meta)
    assert sus[0].meta["method"] == "fit_weighted_aum"
    assert _values(recs, "suspicious_auroc")[0].meta["method"] == "fit_weighted_aum"
    scores = [r.meta["score"] for r in sus]
    assert scores == sorted(scores, reverse=True)
    assert probe.history().n_epochs == EPOCHS + 1  # final state not measured twice


def test_values_equal_the_tracker_on_the_same_states():
    x, y, noisy = _data()
    net = _model()
    probe = PerExampleProbe(x, y, noisy_mask=noisy, top_k=N + 5, batch_size=7)
    scope = Scope(net, [probe], out=None)
    snaps = []
    _train(net, x, y, scope, snapshots=snaps)
    scope.close()

    # Oracle: the measure's tracker fed with full-batch eval logits of the same states.
    tracker = PerExampleTracker(N)
    clone = _model()
    clone.eval()
    per_epoch_logits = []
    for state in snaps:
        clone.load_state_dict(state)
        with torch.no_grad():
            z = clone(x)
        per_epoch_logits.append(z)
        tracker.update(z, y, source="eval")
    want = tracker.compute()
    got = probe.history()
    assert got.source == "eval"
    np.testing.assert_array_equal(got.correct, want.correct)
    np.testing.assert_allclose(got.prob_true, want.prob_true, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.margins, want.margins, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.learned_epoch, want.learned_epoch)
    np.testing.assert_array_equal(got.forgetting_events, want.forgetting_events)

    recs = scope.records
    for e, z in enumerate(per_epoch_logits):
        pred = z.argmax(1)
        assert _values(recs, "fraction_correct", subset="all")[e].value == pytest.approx(
            float((pred == y).float().mean()))
        assert _values(recs, "fraction_correct", subset="noisy")[e].value == pytest.approx(
            float((pred[noisy] == y[noisy]).float().mean()))
        assert _values(recs, "fraction_correct", subset="clean")[e].value == pytest.approx(
            float((pred[~noisy] == y[~noisy]).float().mean()))
        assert _values(recs, "mean_prob_true")[e].value == pytest.approx(
            float(want.prob_true[e].mean()), rel=1e-6)
        assert _values(recs, "mean_margin")[e].value == pytest.approx(
            float(want.margins[e].mean()), rel=1e-5, abs=1e-6)

    def one(key):
        (r,) = _values(recs, key)
        return r.value

    le = want.learned_epoch  # per_epoch(): measurement index == epoch
    assert one("n_never_learned") == np.sum(le < 0)
    assert one("mean_learned_epoch") == pytest.approx(le[le >= 0].mean())
    assert one("n_forgetting_events") == want.forgetting_events.sum()
    assert one("n_forgotten_examples") == np.sum(want.forgetting_events > 0)
    sus = _values(recs, "suspicious_example")
    assert len(sus) == N  # top_k capped at n
    assert [int(r.value) for r in sus] == want.ranking.indices.tolist()
    for r in sus[:5]:
        i = int(r.value)
        assert r.meta["score"] == pytest.approx(want.ranking.scores[i], abs=1e-6)
        assert r.meta["confidence"] == pytest.approx(want.data_map.confidence[i], abs=1e-6)
        assert r.meta["variability"] == pytest.approx(want.data_map.variability[i], abs=1e-6)
        assert r.meta["learned_epoch"] == le[i]
        assert r.meta["forgetting"] == want.forgetting_events[i]
        assert r.meta["aum"] == pytest.approx(want.ranking.aum[i], abs=1e-5)
        assert r.meta["fit_weighted_aum"] == pytest.approx(want.ranking.fit_weighted_aum[i],
                                                           abs=1e-5)
    assert one("suspicious_precision_at_k") == pytest.approx(noisy.float().mean().item())
    # AUROC by brute force over (noisy, clean) pairs, ties counting 1/2
    s_noisy = want.ranking.scores[noisy.numpy()][:, None]
    s_clean = want.ranking.scores[~noisy.numpy()][None, :]
    pairs = (s_noisy > s_clean).mean() + 0.5 * (s_noisy == s_clean).mean()
    assert one("suspicious_auroc") == pytest.approx(pairs, abs=1e-4)


def test_rank_by_chooses_the_score_and_is_recorded():
    x, y, noisy = _data()
    net = _model()
    probe = PerExampleProbe(x, y, noisy_mask=noisy, top_k=N, rank_by="combined")
    scope = Scope(net, [probe], out=None)
    _train(net, x, y, scope)
    scope.close()
    want = probe._tracker.compute(method="combined").ranking
    sus = _values(scope.records, "suspicious_example")
    assert [int(r.value) for r in sus] == want.indices.tolist()
    assert sus[0].meta["method"] == "combined" and sus[0].meta["weights"] == [1.0, 1.0, 1.0]
    assert probe.history().ranking.method == "combined"
    (auc,) = _values(scope.records, "suspicious_auroc")
    assert auc.meta["method"] == "combined"
    assert auc.value == pytest.approx(detection_auroc(want.scores, noisy.numpy()))
    assert probe.params()["rank_by"] == "combined"
    with pytest.raises(ValueError, match="rank_by"):
        PerExampleProbe(x, y, rank_by="forgetting")


def _flipped_mnist1d_run(seed: int, n: int = 2000, epochs: int = 60, noise: float = 0.2):
    """An MLP 40-128-128-10 (Adam, batch 50) fits MNIST-1D with flipped labels (to 99%)."""
    data = mnist1d(5000, n_train=n)
    y, mask = flip_labels(data.y_train, noise, 10, seed=seed)
    x = data.x_train.float()
    net = mlp([40, 128, 128, 10], seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    probe = PerExampleProbe(x, y, noisy_mask=mask, top_k=int(mask.sum()))
    scope = Scope(net, [probe], out=None)
    order = torch_generator(seed, "batches")
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=order).split(50):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            scope.step(loss)
        scope.epoch()
    scope.close()
    return probe, scope.records, mask.numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_default_ranking_finds_planted_flipped_labels(seed):
    """20% of 2000 MNIST-1D labels flipped to another class; the network memorises them.

    Measured over seeds 0-9 (torch 2.13 CPU): AUROC of the default (fit-weighted AUM) ranking
    0.816-0.852 (mean 0.833), precision at k = n flipped 0.55-0.59; it beats the old
    equal-weight combined score by 0.045-0.070 and data-map confidence alone by 0.03-0.06.
    """
    probe, recs, noisy = _flipped_mnist1d_run(seed)
    (auc,) = _values(recs, "suspicious_auroc")
    (prec,) = _values(recs, "suspicious_precision_at_k")
    assert auc.meta["method"] == "fit_weighted_aum"
    assert auc.value > 0.79
    assert prec.value > 0.5 and prec.meta["k"] == noisy.sum()
    h = probe.history()
    assert h.correct[-1].mean() > 0.95  # the flipped labels were memorised
    for other, gap in (("combined", 0.02), ("confidence", 0.015)):
        scores = probe._tracker.compute(method=other).ranking.scores
        assert auc.value > detection_auroc(scores, noisy) + gap, other


def test_precision_at_k_and_suspicion_on_a_closed_form_case():
    """A fixed 'model' that gets examples 0..3 wrong: the most suspicious are exactly those."""

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.stack([x[:, 0], -x[:, 0]], dim=1) + 0 * self.w

    x = torch.tensor([[-1.0], [-2.0], [-3.0], [-4.0], [1.0], [2.0], [3.0], [4.0]])
    y = torch.zeros(8, dtype=torch.long)
    noisy = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    probe = PerExampleProbe(x, y, schedule=at_end(), noisy_mask=noisy, top_k=4)
    scope = Scope(Fixed(), [probe], out=None)
    scope.close()
    recs = scope.records
    assert _values(recs, "fraction_correct", subset="all")[0].value == 0.5
    assert _values(recs, "fraction_correct", subset="noisy")[0].value == 0.0
    assert _values(recs, "fraction_correct", subset="clean")[0].value == pytest.approx(4 / 6)
    assert {int(r.value) for r in _values(recs, "suspicious_example")} == {0, 1, 2, 3}
    assert _values(recs, "suspicious_precision_at_k")[0].value == 0.5
    assert _values(recs, "n_never_learned")[0].value == 4
    assert _values(recs, "mean_learned_epoch")[0].value == 0
    assert _values(recs, "n_forgetting_events")[0].value == 0
    assert _values(recs, "mean_margin")[0].value == 0.0  # margins -2,-4,-6,-8,2,4,6,8
    # scores -margin = 2, 4 (noisy) vs 6, 8, -2, -4, -6, -8: each noisy beats 4 of 6 clean
    assert _values(recs, "suspicious_auroc")[0].value == pytest.approx(2 / 3)


def test_final_state_is_measured_when_the_schedule_missed_it():
    x, y, _ = _data()
    net = _model()
    probe = PerExampleProbe(x, y, schedule=every(4))
    scope = Scope(net, [probe], out=None)
    _train(net, x, y, scope)  # 30 steps: measured at 0, 4, ..., 28, then 30 in finish
    scope.close()
    steps = [r.step for r in _values(scope.records, "mean_margin")]
    assert steps == [*range(0, 29, 4), 30]
    assert probe.history().n_epochs == len(steps)
    assert not _values(scope.records, "suspicious_precision_at_k")  # no noisy_mask


def test_does_not_change_training():
    x, y, noisy = _data()
    plain = _train(_model(), x, y)
    probed = _model()
    probed.train()
    rng = torch.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    scope = Scope(probed, [PerExampleProbe(x, y, noisy_mask=noisy, batch_size=50,
                                           schedule=every(3))], data=(x[:8], y[:8]), out=None)
    assert torch.equal(torch.get_rng_state(), rng)
    requires = [p.requires_grad for p in probed.parameters()]
    _train(probed, x, y, scope)
    assert all(m.training for m in probed.modules())
    scope.close()
    assert_same_model(plain, probed)  # weights and BatchNorm running stats bit-identical
    assert [p.requires_grad for p in probed.parameters()] == requires
    assert np.array_equal(np.random.get_state()[1], np_rng)


def test_bad_args():
    x, y, noisy = _data()
    with pytest.raises(ValueError, match="targets must have shape"):
        PerExampleProbe(x, y[:5])
    with pytest.raises(ValueError, match="integer class labels"):
        PerExampleProbe(x, y.float())
    with pytest.raises(ValueError, match="noisy_mask must have shape"):
        PerExampleProbe(x, y, noisy_mask=noisy[:3])
    with pytest.raises(ValueError, match="noisy_mask must be boolean"):
        PerExampleProbe(x, y, noisy_mask=torch.full((N,), 2))
    with pytest.raises(ValueError, match="top_k"):
        PerExampleProbe(x, y, top_k=0)
    with pytest.raises(ValueError, match="batch_size"):
        PerExampleProbe(x, y, batch_size=0)
    with pytest.raises(ValueError, match="non-empty"):
        PerExampleProbe(x[:0], y[:0])
    with pytest.raises(ValueError, match="schedule"):
        PerExampleProbe(x, y, schedule="epoch")
    with pytest.raises(ValueError, match="nothing recorded"):
        PerExampleProbe(x, y).history()
    p = PerExampleProbe(x, y, noisy_mask=noisy.int())
    assert p.noisy_mask.dtype == torch.bool
    assert p.params()["inputs"] == f"tensor({N}, 6)" and p.params()["top_k"] == 20
