import copy
import math

import pytest
import torch
import torch.nn.functional as F

from learnscope import Scope
from learnscope.measures.cka import cka_matrix, linear_cka
from learnscope.measures.svcca import svcca
from learnscope.models.mlp import mlp
from learnscope.probes.base import capture, eval_mode
from learnscope.probes.schedule import at_end, every, log_spaced
from learnscope.probes.similarity import LayerSimilarityProbe
from learnscope.testing import assert_same_model

STEPS = 12
SIZES = [8, 16, 16, 3]

def probed(scope):
    """The probes' records (without the loss and scalars the loop passed to step())."""
    return [r for r in scope.records if r.probe != "scalars"]



def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    xp = torch.randn(40, 8, generator=g)
    yp = (xp[:, 0] > 0).long() + (xp[:, 1] > 0).long()
    return x, y, xp, yp


def _train(model, steps=STEPS, scope=None, on_step=None):
    x, y, _, _ = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    model.train()
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(t, model)
        if scope is not None:
            scope.step(loss)
    return model


def _acts(model, layers, xp):
    with torch.no_grad(), eval_mode(model), capture(model, layers) as store:
        model(xp)
    return {k: v.clone() for k, v in store.items()}


def _run(probe, steps=STEPS, schedule_steps=None):
    """Train with the probe attached; return the scope and the oracle activations per step."""
    _, _, xp, yp = _data()
    model = mlp(SIZES, seed=0)
    layers = probe.layers(model)
    oracle = {0: _acts(model, layers, xp)}

    def snap(t, m):
        if schedule_steps is None or t in schedule_steps:
            oracle[t] = _acts(m, layers, xp)

    scope = Scope(model, [probe], data=(xp, yp), out=None)
    _train(model, steps, scope, snap)
    scope.close()
    return scope, oracle, layers


def _due(schedule, steps):
    return [0] + [s for s in range(1, steps + 1) if schedule.due_step(s)]


def test_emits_keys_at_checkpoints_and_matches_cka():
    probe = LayerSimilarityProbe(schedule=log_spaced(3))
    due = _due(probe.schedule, STEPS)
    scope, oracle, layers = _run(probe)
    assert layers == ["1", "3"]
    final = oracle[STEPS]
    ckpts = sorted(set(due) | {STEPS})

    to_final = [r for r in probed(scope) if r.key == "similarity_to_final"]
    assert len(to_final) == len(ckpts) * len(layers)
    for r in to_final:
        s, layer = r.meta["checkpoint_step"], r.meta["layer"]
        assert s in ckpts
        assert r.meta["method"] == "cka" and r.meta["unbiased"] is False
        assert r.probe == "layer_similarity"
        assert r.value == pytest.approx(linear_cka(oracle[s][layer], final[layer]), abs=1e-10)
        if s == STEPS:
            assert r.value == pytest.approx(1.0, abs=1e-12)
    # Early checkpoints are not identical to the final state.
    first = [r.value for r in to_final if r.meta["checkpoint_step"] == 0]
    assert all(v < 0.9999 for v in first)

    pairs = [r for r in probed(scope) if r.key == "layer_similarity"]
    assert sorted({r.step for r in pairs}) == ckpts
    assert all((r.meta["layer_a"], r.meta["layer_b"]) == ("1", "3") for r in pairs)
    for r in pairs:
        m = cka_matrix([oracle[r.step]["1"], oracle[r.step]["3"]])
        assert r.value == pytest.approx(float(m[0, 1]), abs=1e-10)

    t90 = {r.meta["layer"]: r for r in probed(scope) if r.key == "steps_to_threshold"}
    assert set(t90) == set(layers)
    for layer, r in t90.items():
        assert r.meta["threshold"] == 0.9
        series = sorted((x.meta["checkpoint_step"], x.value) for x in to_final
                        if x.meta["layer"] == layer)
        assert r.value == next(s for s, v in series if v >= 0.9)


def test_unbiased_and_svcca_match_measures():
    probe = LayerSimilarityProbe(schedule=every(4), unbiased=True)
    scope, oracle, _ = _run(probe, steps=8)
    for r in probed(scope):
        if r.key == "similarity_to_final":
            s, layer = r.meta["checkpoint_step"], r.meta["layer"]
            assert r.meta["unbiased"] is True
            ref = linear_cka(oracle[s][layer], oracle[8][layer], unbiased=True)
            assert r.value == pytest.approx(ref, abs=1e-10)
        elif r.key == "layer_similarity":
            ref = linear_cka(oracle[r.step]["1"], oracle[r.step]["3"], unbiased=True)
            assert r.value == pytest.approx(ref, abs=1e-10)

    probe = LayerSimilarityProbe(schedule=every(4), method="svcca", variance_threshold=0.95)
    scope, oracle, _ = _run(probe, steps=8)
    n_final = 0
    for r in probed(scope):
        if r.key == "similarity_to_final":
            n_final += 1
            s, layer = r.meta["checkpoint_step"], r.meta["layer"]
            assert r.meta == r.meta | {"method": "svcca", "variance_threshold": 0.95}
            ref = svcca(oracle[s][layer], oracle[8][layer], variance_threshold=0.95)
            assert r.value == pytest.approx(ref.mean_correlation, abs=1e-10)
            assert r.meta["kept_dims"] == list(ref.kept_dims)
        elif r.key == "layer_similarity":
            ref = svcca(oracle[r.step]["1"], oracle[r.step]["3"], variance_threshold=0.95)
            assert r.value == pytest.approx(ref.mean_correlation, abs=1e-10)
    assert n_final == 3 * 2  # checkpoints 0, 4, 8 x two layers


def test_final_state_is_a_checkpoint_and_at_end_schedule():
    # Final step 7 is not on the every(4) schedule: it is added as a checkpoint, and the
    # pairs for it are emitted once.
    probe = LayerSimilarityProbe(schedule=every(4))
    scope, _, _ = _run(probe, steps=7)
    steps = sorted({r.meta["checkpoint_step"] for r in probed(scope)
                    if r.key == "similarity_to_final"})
    assert steps == [0, 4, 7]
    assert sorted(r.step for r in probed(scope) if r.key == "layer_similarity") == [0, 4, 7]
    # Final step on the schedule: no duplicate pairs at that step.
    probe = LayerSimilarityProbe(schedule=every(4))
    scope, _, _ = _run(probe, steps=8)
    assert sorted(r.step for r in probed(scope) if r.key == "layer_similarity") == [0, 4, 8]
    # at_end: only the final state.
    probe = LayerSimilarityProbe(schedule=at_end(), pairs=False)
    scope, _, _ = _run(probe, steps=3)
    assert {r.key for r in probed(scope)} == {"similarity_to_final", "steps_to_threshold"}
    assert all(r.value == pytest.approx(1.0) for r in probed(scope)
               if r.key == "similarity_to_final")
    assert all(r.value == 3.0 for r in probed(scope) if r.key == "steps_to_threshold")


def test_checkpoint_records_keep_their_epoch():
    _, _, xp, yp = _data()
    model = mlp(SIZES, seed=0)
    probe = LayerSimilarityProbe(schedule=every(2))
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    for _ in range(2):
        _train(model, steps=2, scope=scope)
        scope.epoch()
    scope.close()
    epochs = {r.meta["checkpoint_step"]: r.meta["epoch"] for r in probed(scope)
              if r.key == "similarity_to_final"}
    assert epochs == {0: 0, 2: 0, 4: 1}  # as the layer_similarity records at those steps
    pair_epochs = {r.step: r.meta["epoch"] for r in probed(scope) if r.key == "layer_similarity"}
    assert pair_epochs == epochs


def test_constant_layer_gives_nan_with_note():
    _, _, xp, yp = _data()
    model = mlp(SIZES, seed=0)
    with torch.no_grad():  # layer "3" outputs relu(-1) = 0 for every input: CKA undefined
        model[2].weight.zero_()
        model[2].bias.fill_(-1.0)
    probe = LayerSimilarityProbe(["0", "1", "3"], schedule=every(1))
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    scope.close()
    assert len(probed(scope)) == 3 + 3 + 3  # pairs, similarity_to_final, steps_to_threshold
    for r in probed(scope):
        involves_3 = "3" in (r.meta.get("layer"), r.meta.get("layer_a"), r.meta.get("layer_b"))
        assert math.isnan(r.value) == involves_3, r
        if involves_3:
            assert "constant" in r.meta["note"]
    # The remaining pair still comes from cka_matrix.
    acts = _acts(model, ["0", "1"], xp)
    (r01,) = [r for r in probed(scope) if r.key == "layer_similarity"
              and (r.meta["layer_a"], r.meta["layer_b"]) == ("0", "1")]
    assert r01.value == pytest.approx(float(cka_matrix([acts["0"], acts["1"]])[0, 1]))


def test_does_not_change_training():
    ref = _train(mlp(SIZES, seed=0))
    _, _, xp, yp = _data()
    model = mlp(SIZES, seed=0)
    rng = torch.get_rng_state()
    probe = LayerSimilarityProbe(schedule=every(1), dtype=torch.float64)
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    _train(model, scope=scope)
    scope.close()
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_model(ref, model)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_params_and_bad_args():
    p = LayerSimilarityProbe(["1"], method="svcca", dtype=torch.float64)
    params = p.params()
    assert params["layers"] == ["1"] and params["dtype"] == "float64"
    assert params["method"] == "svcca" and params["schedule"] == str(p.schedule)
    for kwargs in [{"method": "cosine"}, {"variance_threshold": 0.0},
                   {"variance_threshold": 1.5}, {"dtype": torch.int64},
                   {"method": "svcca", "unbiased": True}, {"unbiased": "yes"},
                   {"threshold": math.nan}]:
        with pytest.raises(ValueError):
            LayerSimilarityProbe(**kwargs)
    for layers in ["1", [], ["1", "1"]]:
        with pytest.raises(ValueError):
            LayerSimilarityProbe(layers)
    _, _, xp, yp = _data()
    with pytest.raises(ValueError, match="no module named 'nope'"):
        Scope(mlp(SIZES, seed=0), [LayerSimilarityProbe(["nope"])], data=(xp, yp), out=None)
    with pytest.raises(ValueError, match="probe data"):
        Scope(mlp(SIZES, seed=0), [LayerSimilarityProbe()], data=None, out=None)
    with pytest.raises(ValueError, match="at least 4"):
        Scope(mlp(SIZES, seed=0), [LayerSimilarityProbe(unbiased=True)],
              data=(xp[:3], yp[:3]), out=None)


def test_stored_activations_are_copies():
    # Stored activations are copies: training after a checkpoint must not change them.
    probe = LayerSimilarityProbe(schedule=every(1), pairs=False)
    _, _, xp, yp = _data()
    model = mlp(SIZES, seed=0)
    scope = Scope(model, [probe], data=(xp, yp), out=None)
    stored = copy.deepcopy(probe._checkpoints[0][1])
    _train(model, steps=2, scope=scope)
    assert all(torch.equal(stored[k], probe._checkpoints[0][1][k]) for k in stored)
    scope.close()
