"""Findings on a user's run: synthetic records with known answers, oracles for the math, and a
real tiny Scope run (findings in result.json and report.html, recomputed by the rebuild)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from learnscope.analysis.findings import (
    compute_findings,
    dead_unit_counts,
    stability_threshold,
)
from learnscope.store.records import Record

torch.set_num_threads(1)


def _by_id(findings):
    return {f.id: f for f in findings}


def test_absent_probes_give_no_findings():
    assert compute_findings([]) == []
    assert compute_findings([Record("loss", 1.0, 1, "scalars")]) == []


def test_falling_loss_and_rising_test_loss():
    recs = [Record("loss", 2.0 / (1 + s), s, "scalars") for s in range(1, 101)]
    recs += [Record("test_loss", v, s, "scalars")
             for s, v in [(10, 1.0), (50, 0.5), (100, 0.8)]]
    f = _by_id(compute_findings(recs))
    loss = f["training-loss-falls"]
    assert loss.holds and not loss.gating
    assert loss.measured["loss_start"] == pytest.approx(sum(2 / (1 + s) for s in range(1, 11))
                                                        / 10)
    assert "still falling" in loss.statement
    held = f["held-out-loss-near-best"]
    assert not held.holds  # 0.8 / 0.5 = 1.6 > 1.1: overfitting
    assert held.measured["best_step"] == 50
    assert held.measured["end_over_best"] == pytest.approx(1.6)
    assert "overfitting" in held.statement
    rising = [Record("loss", float(s), s, "scalars") for s in range(1, 21)]
    assert not _by_id(compute_findings(rising))["training-loss-falls"].holds


def test_flipped_labels_are_listed_with_label_and_prediction():
    # Examples 3 and 7 have flipped labels: never learned (learned_epoch -1), the model
    # predicts their true class; example 5 was fitted late (memorized).
    recs = [Record("suspicious_example", float(i), 9, "per_example",
                   {"rank": r, "score": 1.0 - r / 10, "method": "fit_weighted_aum",
                    "learned_epoch": le})
            for r, (i, le) in enumerate([(3, -1), (7, -1), (5, 8)])]
    context = {"examples": {"per_example": {"3": {"label": 1, "prediction": 4},
                                            "7": {"label": 0, "prediction": 2},
                                            "5": {"label": 6, "prediction": 6}}}}
    f = _by_id(compute_findings(recs, context))["suspicious-examples"]
    assert f.measured["examples"] == [3, 7, 5]
    assert f.measured["given_label"] == [1, 0, 6]
    assert f.measured["prediction"] == [4, 2, 6]
    assert f.measured["still_misclassified"] == 2 and not f.holds
    assert "#3 (label 1, predicted 4)" in f.statement and "mislabeled" in f.statement
    # Without the context, the learned epochs alone still count the two.
    g = _by_id(compute_findings(recs))["suspicious-examples"]
    assert g.measured["still_misclassified"] == 2
    assert "not recorded" in g.statement


def _similarity(layer, steps_values, threshold=0.9):
    recs = [Record("similarity_to_final", v, s, "layer_similarity",
                   {"layer": layer, "checkpoint_step": s, "method": "cka"})
            for s, v in steps_values]
    return recs + [Record("steps_to_threshold", 0.0, steps_values[-1][0], "layer_similarity",
                          {"layer": layer, "threshold": threshold, "method": "cka"})]


def test_frozen_layer_settles_at_once_and_a_moving_one_does_not():
    steps = [0, 1, 3, 10, 30, 100]
    recs = _similarity("frozen", [(s, 1.0) for s in steps])
    recs += _similarity("moving", list(zip(steps, [0.1, 0.3, 0.5, 0.7, 0.8, 1.0],
                                           strict=True)))
    # Above 0.9 at step 1, below at 3, then above from step 10 on.
    recs += _similarity("late", list(zip(steps, [0.2, 0.95, 0.5, 0.92, 0.97, 1.0],
                                         strict=True)))
    f = _by_id(compute_findings(recs))
    assert f["layer-settled:frozen"].holds
    assert f["layer-settled:frozen"].measured["settled_at_step"] == 0
    assert not f["layer-settled:moving"].holds
    assert "still moves" in f["layer-settled:moving"].statement
    assert f["layer-settled:moving"].measured["similarity_before_end"] == 0.8
    # 0.95 at step 1 does not count: it fell below 0.9 again at step 3.
    assert f["layer-settled:late"].measured["settled_at_step"] == 10


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.5, True)])
def test_stability_threshold_is_where_torch_sgd_diverges(momentum, nesterov):
    """Oracle: torch's SGD on the 1-D quadratic lam * w^2 / 2 converges just below the
    threshold and diverges just above it."""
    lr = 0.1
    thr = stability_threshold(lr, "SGD", momentum, nesterov)

    def final_size(lam):
        w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lr, momentum=momentum, nesterov=nesterov)
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * lam * w ** 2).sum().backward()
            opt.step()
        return abs(float(w.detach()))

    assert final_size(0.98 * thr) < 1e-3
    assert final_size(1.02 * thr) > 1e3
    assert math.isnan(stability_threshold(lr, "Adam"))


def _quadratic_scope_run(tmp_path, lr, name):
    """A linear model with MSE loss: a quadratic whose Hessian is 2 X^T X / n, built so its
    top eigenvalue is exactly 2 / 0.1 = 20."""
    from learnscope import Scope
    from learnscope.probes import CurvatureProbe, every

    d, n = 4, 8
    x = torch.zeros(n, d, dtype=torch.float64)
    x[:, 0] = math.sqrt(10.0)  # 2 * 10 = 20 on the first axis
    x[:4, 1], x[4:, 1] = 1.0, -1.0  # orthogonal to the first column: H = diag(20, 2, 0, 0)
    y = torch.zeros(n, 1, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    probe = CurvatureProbe(nn.functional.mse_loss, schedule=every(1), trace_samples=4)
    scope = Scope(model, [probe], data=(x, y), out=tmp_path, name=name, optimizer=opt,
                  report=False)
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        scope.step(loss)
    scope.close()
    return _by_id(scope.findings)["edge-of-stability"]


def test_quadratic_at_the_edge_of_stability(tmp_path):
    at = _quadratic_scope_run(tmp_path, 0.1, "edge")
    assert at.measured["sharpness"] == pytest.approx(20.0, rel=1e-6)
    assert at.measured["threshold"] == pytest.approx(20.0)
    assert at.measured["sharpness_over_threshold"] == pytest.approx(1.0, rel=1e-6)
    assert at.holds and "At the edge of stability" in at.statement
    below = _quadratic_scope_run(tmp_path, 0.01, "below")
    assert below.measured["sharpness_over_threshold"] == pytest.approx(0.1, rel=1e-6)
    assert not below.holds and "Below the edge" in below.statement


def test_edge_without_a_learning_rate_or_with_adam_says_so():
    recs = [Record("hessian_top_eigenvalue", 5.0, 3, "curvature", {"converged": True})]
    f = _by_id(compute_findings(recs))["edge-of-stability"]
    assert not f.holds and f.measured["reliable"] is False and "lr=" in f.statement
    adam = {"optimizer": {"optimizer": "Adam", "lr_steps": [[0, 1e-3]]}}
    g = _by_id(compute_findings(recs, adam))["edge-of-stability"]
    assert not g.holds and "Adam" in g.statement
    # a learning-rate change at step 2: the lr in effect at step 3 is the new one
    sgd = {"optimizer": {"optimizer": "SGD", "momentum": 0.0, "lr_steps": [[0, 1.0], [2, 0.4]]}}
    h = _by_id(compute_findings(recs, sgd))["edge-of-stability"]
    assert h.measured["learning_rate"] == 0.4 and h.measured["threshold"] == 5.0 and h.holds


def test_noise_scale_reliable_and_not():
    def recs(plugin, unbiased, n):
        m = {"n_examples": n}
        return [Record("grad_noise_scale", plugin, 10, "gradient_noise", m),
                Record("grad_noise_scale_unbiased", unbiased, 10, "gradient_noise", m)]

    f = _by_id(compute_findings(recs(30.0, 40.0, 256)))["gradient-noise-scale"]
    assert f.holds and f.measured["suggested_batch_size"] == 40
    assert f.measured["B_simple_over_n_examples"] == pytest.approx(40 / 256)
    g = _by_id(compute_findings(recs(60.0, math.nan, 64)))["gradient-noise-scale"]
    assert not g.holds and "Not reliable" in g.statement


def test_weight_tails_read_by_the_published_ranges():
    def alpha(layer, a, reliable=True):
        return Record("alpha", a, 5, "weight_spectrum",
                      {"layer": layer, "reliable": reliable, "n_tail": 80,
                       "reason": None if reliable else "only 12 tail eigenvalues"})

    f = _by_id(compute_findings([alpha("a", 3.0), alpha("b", 1.5), alpha("c", 8.0),
                                 alpha("d", 3.0, reliable=False)]))
    assert f["weight-tail:a"].holds and "well-trained" in f["weight-tail:a"].statement
    assert not f["weight-tail:b"].holds and "over-trained" in f["weight-tail:b"].statement
    assert not f["weight-tail:c"].holds and "under-trained" in f["weight-tail:c"].statement
    d = f["weight-tail:d"]
    assert not d.holds and "not reliable" in d.statement and d.measured["reliable"] is False


def test_vanishing_gradients_across_depth():
    def norms(step, first):
        return [Record("grad_norm", v, step, "gradient_stats", {"parameter": p}) for p, v in
                [("all", 1.0), ("0.weight", first), ("0.bias", 1.0), ("2.weight", 1.0)]]

    f = _by_id(compute_findings(norms(10, 1e-6) + norms(20, 1e-5)))["gradient-flow"]
    assert not f.holds and "Vanishing" in f.statement
    assert f.measured["first_parameter"] == "0.weight"
    assert f.measured["last_parameter"] == "2.weight"
    healthy = _by_id(compute_findings(norms(10, 0.5)))["gradient-flow"]
    assert healthy.holds


def test_dead_units_oracle():
    """Inputs are positive; units 0-2 have negative weights and bias: never active."""
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.1)
        model[0].weight[:3] = -1.0
        model[0].bias[:3] = -0.5
    model.train()
    x = torch.rand(50, 3) + 0.01
    counts = dead_unit_counts(model, x, batch_size=16)
    assert counts == {"1": {"dead": 3, "units": 8, "examples": 50}}
    assert model.training  # flags restored
    f = _by_id(compute_findings([], {"dead_units": counts}))["dead-units:1"]
    assert f.measured["dead_fraction"] == pytest.approx(3 / 8) and not f.holds


def test_real_scope_run_has_findings_in_result_and_report(tmp_path):
    from learnscope import Scope
    from learnscope.data import mnist1d
    from learnscope.probes import (
        CurvatureProbe,
        GradientNoiseProbe,
        PerExampleProbe,
        default_probes,
        every,
    )
    from learnscope.runner import rebuild_report
    from learnscope.seeding import torch_generator

    data = mnist1d(num_samples=400)
    x, y = data.x_train[:200], data.y_train[:200].clone()
    y[:20] = (y[:20] + 1) % 10  # flipped labels
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.functional.cross_entropy
    probes = default_probes() + [
        PerExampleProbe(x, y, top_k=5), CurvatureProbe(loss_fn, schedule=every(20),
                                                       trace_samples=4),
        GradientNoiseProbe(loss_fn, schedule=every(20), n_examples=32)]
    scope = Scope(model, probes, data=(data.x_test[:64], data.y_test[:64]), out=tmp_path,
                  name="tiny", optimizer=opt)
    gen = torch_generator(0, "test_findings")
    for _ in range(4):
        for idx in torch.randperm(200, generator=gen).split(50):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            with torch.no_grad():
                test_loss = float(loss_fn(model(data.x_test[:64]), data.y_test[:64]))
            scope.step(loss, test_loss=test_loss)
        scope.epoch()
    scope.close()
    result = json.loads((scope.run_dir / "result.json").read_text())
    ids = {f["id"] for f in result["findings"]}
    for expected in ("training-loss-falls", "held-out-loss-near-best", "suspicious-examples",
                     "edge-of-stability", "gradient-noise-scale", "gradient-flow",
                     "dead-units:1", "layer-settled:1", "fits-training-set"):
        assert expected in ids, (expected, ids)
    assert any(i.startswith("weight-tail:") for i in ids)
    assert all(f["gating"] is False for f in result["findings"])
    assert result["config"]["optimizer"]["optimizer"] == "SGD"
    assert result["findings_context"]["optimizer"]["lr_steps"] == [[0, 0.1]]
    sus = next(f for f in result["findings"] if f["id"] == "suspicious-examples")
    assert sus["measured"]["given_label"] == [int(y[i]) for i in sus["measured"]["examples"]]
    edge = next(f for f in result["findings"] if f["id"] == "edge-of-stability")
    assert edge["measured"]["threshold"] == pytest.approx(2 * 1.9 / 0.1)
    html = (scope.run_dir / "report.html").read_text()
    assert "edge-of-stability" in html and "suspicious-examples" in html
    # the report's table of suspicious examples names each one's label and prediction
    assert "given label" in html and "final prediction" in html
    first = sus["measured"]["examples"][0]
    context = result["findings_context"]["examples"]["per_example"][str(first)]
    assert context["label"] == int(y[first]) and context["prediction"] in range(10)
    (scope.run_dir / "report.html").unlink()
    rebuilt = rebuild_report(scope.run_dir).read_text()
    assert "edge-of-stability" in rebuilt and "gradient-noise-scale" in rebuilt
