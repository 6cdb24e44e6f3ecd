"""Findings: what a probe run's records say about the training, as claim-like statements.

A study states claims it expects to hold; a user's run has no expectation, so its report
states *findings* instead: each one a :class:`~learnscope.analysis.claims.Claim` (not gating)
whose ``statement`` is the plain-language reading of this run, whose ``measured`` holds the
numbers it was read from and whose ``threshold`` is the condition that ``holds`` reports.
The condition is the one named by the finding's id (``training-loss-falls``: the loss fell;
``edge-of-stability``: the sharpness reached the stability threshold; ``layer-settled:fc1``:
the layer settled before the end), so ``holds`` is a fact about the run, not a grade.

A finding whose probe was not attached is absent. One whose estimate is unreliable says so
in its statement and records ``reliable: False``; its tested value is then NaN, which never
holds.

``compute_findings(records, context)`` reads only the records and a small ``context`` (what
the records cannot carry: the learning rate and optimizer, the labels and predictions of the
suspicious examples, dead units): the Scope stores that context in ``result.json`` so the
findings can be recomputed from the store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from learnscope.analysis.claims import Claim, at_least, at_most, below, between, claim
from learnscope.store.records import Record

__all__ = ["EDGE_BAND", "FLOW_FACTOR", "SETTLE_THRESHOLD", "compute_findings",
           "dead_unit_counts", "stability_threshold"]

EDGE_BAND = 0.9
"""Sharpness at or above this fraction of the stability threshold counts as at the edge."""
FLOW_FACTOR = 1e3
"""First-to-last-layer gradient norm ratios beyond this factor (either way) are flagged."""
SETTLE_THRESHOLD = 0.9
"""Similarity to the final representation that counts as settled when the probe gave none."""
DEAD_FLAG = 0.1
"""A layer with more than this fraction of dead units is flagged (a flag, not a published
threshold)."""
LISTED_EXAMPLES = 10
"""How many suspicious examples a finding lists."""
TEST_LOSS_KEYS = ("test_loss", "val_loss", "valid_loss", "validation_loss", "eval_loss")
TEST_ACCURACY_KEYS = ("test_accuracy", "val_accuracy", "test_acc", "val_acc", "eval_accuracy")


def _finding(*args: Any, **kwargs: Any) -> Claim:
    return claim(*args, gating=False, **kwargs)


def _by_key(records: Sequence[Record]) -> dict[str, dict[str, list[Record]]]:
    """``{key: {probe label: records}}``."""
    out: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[r.key][r.probe].append(r)
    return out


def _suffix(label: str, labels: Sequence[str]) -> str:
    """The probe label in an id only when two probes record the same key."""
    return f"[{label}]" if len(labels) > 1 else ""


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


# -- the training curves ------------------------------------------------------------------

def _loss_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    series = sorted((r.step, r.value) for r in keys.get("loss", {}).get("scalars", []))
    if len(series) < 2:
        return []
    values = [v for _, v in series]
    finite = [v for v in values if math.isfinite(v)]
    bad = len(values) - len(finite)
    w = max(1, len(values) // 10)
    start = sum(values[:w]) / w
    end = sum(values[-w:]) / w
    before = sum(values[-2 * w:-w]) / w if len(values) >= 3 * w else math.nan
    ratio = end / start if start != 0 else math.nan
    if not math.isfinite(end):
        reading = (f"The training loss became non-finite ({bad} of {len(values)} steps): the "
                   "run diverged.")
    elif ratio < 1:
        reading = (f"The training loss fell from {_g(start)} (mean of the first {w} steps) to "
                   f"{_g(end)} (the last {w}), {100 * (1 - ratio):.0f}% lower")
        if math.isfinite(before) and before > 0:
            change = end / before - 1
            reading += (f"; it was still falling at the end ({100 * -change:.1f}% below the "
                        f"{w} steps before)." if change < -0.01 else
                        f"; it had flattened by the end (within 1% of the {w} steps before)."
                        if abs(change) <= 0.01 else
                        f"; it rose {100 * change:.1f}% over the last {w} steps.")
        else:
            reading += "."
    else:
        reading = (f"The training loss did not fall: {_g(start)} over the first {w} steps, "
                   f"{_g(end)} over the last {w}.")
    return [_finding("training-loss-falls", reading, "loss_end_over_start", ratio, below(1),
                     extra={"loss_start": start, "loss_end": end, "min_loss": min(finite)
                            if finite else math.nan, "steps": len(values),
                            "window_steps": w, "non_finite_steps": bad})]


def _train_loss_near(series: list[tuple[int, float]], step: int, w: int) -> float:
    """Mean training loss over the ``w`` steps up to ``step``."""
    window = [v for s, v in series if step - w < s <= step and math.isfinite(v)]
    return sum(window) / len(window) if window else math.nan


def _generalization_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    """Test (or validation) loss and accuracy passed as step scalars, against the training loss."""
    train = sorted((r.step, r.value) for r in keys.get("loss", {}).get("scalars", []))
    out: list[Claim] = []
    loss_key = next((k for k in TEST_LOSS_KEYS if keys.get(k, {}).get("scalars")), None)
    if loss_key is not None:
        test = sorted((r.step, r.value) for r in keys[loss_key]["scalars"])
        finite = [(s, v) for s, v in test if math.isfinite(v)]
        if finite:
            best_step, best = min(finite, key=lambda sv: sv[1])
            last_step, last = test[-1]
            gaps_w = max(1, len(train) // 20)
            gap_first = test[0][1] - _train_loss_near(train, test[0][0], gaps_w)
            gap_last = last - _train_loss_near(train, last_step, gaps_w)
            rise = last / best if best > 0 else math.nan
            reading = (f"{loss_key} ended at {_g(last)} (step {last_step}); its best was "
                       f"{_g(best)} at step {best_step}. The generalization gap ({loss_key} "
                       f"minus the training loss of the steps before) went from {_g(gap_first)}"
                       f" to {_g(gap_last)}. ")
            reading += ("The held-out loss rose more than 10% above its best: overfitting "
                        "(stopping near its best step would have generalized better)."
                        if rise > 1.1 else "The held-out loss stayed within 10% of its best.")
            out.append(_finding("held-out-loss-near-best", reading, "end_over_best", rise,
                                at_most(1.1), extra={
                                    "key": loss_key, "end": last, "best": best,
                                    "best_step": best_step, "gap_start": gap_first,
                                    "gap_end": gap_last, "measurements": len(test)}))
    acc_key = next((k for k in TEST_ACCURACY_KEYS if keys.get(k, {}).get("scalars")), None)
    if acc_key is not None:
        acc = sorted((r.step, r.value) for r in keys[acc_key]["scalars"])
        finite = [(s, v) for s, v in acc if math.isfinite(v)]
        if finite:
            best_step, best = max(finite, key=lambda sv: sv[1])
            last = acc[-1][1]
            drop = best - last
            out.append(_finding(
                "held-out-accuracy-near-best",
                f"{acc_key} ended at {_g(last)}; its best was {_g(best)} at step {best_step}"
                + (f" ({_g(drop)} lower at the end)." if drop > 0 else "."),
                "best_minus_end", drop, at_most(0.01),
                extra={"key": acc_key, "end": last, "best": best, "best_step": best_step}))
    for label, recs in keys.get("fraction_correct", {}).items():
        subsets: dict[str, list[Record]] = defaultdict(list)
        for r in recs:
            subsets[str(r.meta.get("subset", "all"))].append(r)
        all_ = sorted(subsets.get("all", []), key=lambda r: r.step)
        if not all_:
            continue
        last = all_[-1]
        extra: dict[str, Any] = {"step": last.step, "n": last.meta.get("n")}
        reading = (f"Accuracy on the per-example probe's training examples "
                   f"(n={last.meta.get('n')}) reached {_g(last.value)} at step {last.step}")
        noisy = sorted(subsets.get("noisy", []), key=lambda r: r.step)
        if noisy and math.isfinite(noisy[-1].value):
            extra["fraction_correct_noisy"] = noisy[-1].value
            reading += (f"; on the examples with flipped labels it is {_g(noisy[-1].value)}: "
                        + ("the network memorized them." if noisy[-1].value >= 0.5 else
                           "most flipped labels are not fitted (yet)."))
        else:
            reading += "."
        out.append(_finding("fits-training-set" + _suffix(label, list(keys["fraction_correct"])),
                            reading, "train_accuracy", last.value, at_least(0.99),
                            extra=extra))
    return out


# -- suspicious examples ------------------------------------------------------------------

def _suspicious_findings(keys: dict[str, dict[str, list[Record]]],
                         known: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Claim]:
    out = []
    labels = list(keys.get("suspicious_example", {}))
    for label in labels:
        examples = known.get(label, {})
        recs = sorted(keys["suspicious_example"][label], key=lambda r: r.meta.get("rank", 0))
        top = recs[:LISTED_EXAMPLES]
        idx = [int(r.value) for r in top]
        given = [r.meta.get("label", examples.get(str(i), {}).get("label")) for r, i in
                 zip(top, idx, strict=True)]
        pred = [r.meta.get("prediction", examples.get(str(i), {}).get("prediction")) for r, i
                in zip(top, idx, strict=True)]
        # learned_epoch == -1: not correct at the last measurement (never learned to stay).
        wrong = [int(r.meta.get("learned_epoch", 0)) < 0 for r in top]
        if all(p is not None and g is not None for p, g in zip(pred, given, strict=True)):
            wrong = [p != g for p, g in zip(pred, given, strict=True)]
        method = top[0].meta.get("method", "?") if top else "?"
        parts = []
        for i, g, p, r in zip(idx, given, pred, top, strict=True):
            txt = f"#{i}"
            if g is not None:
                txt += f" (label {g}" + (f", predicted {p})" if p is not None else ")")
            if int(r.meta.get("learned_epoch", -1)) >= 0:
                txt += f" learned at epoch {r.meta['learned_epoch']}"
            parts.append(txt)
        n_wrong = sum(wrong)
        reading = (f"The {len(top)} training examples ranked most suspicious ({method}): "
                   + "; ".join(parts) + ". ")
        reading += (f"{n_wrong} of them still contradict their given label at the end: "
                    "candidates for mislabeled (or genuinely hard) examples: check them" if n_wrong else
                    "All of them are fitted now, but late and with low margins: the signature "
                    "of memorization (or of mislabeled examples fitted by heart)")
        if not given or given[0] is None:
            reading += " (labels and predictions were not recorded)."
        else:
            reading += "."
        extra: dict[str, Any] = {"examples": idx, "given_label": given, "prediction": pred,
                                 "score": [r.meta.get("score") for r in top],
                                 "learned_epoch": [r.meta.get("learned_epoch") for r in top],
                                 "method": method}
        prec = keys.get("suspicious_precision_at_k", {}).get(label)
        if prec:
            extra["precision_at_k_vs_known_noise"] = prec[-1].value
            extra["k"] = prec[-1].meta.get("k")
        out.append(_finding("suspicious-examples" + _suffix(label, labels), reading,
                            "still_misclassified", n_wrong, at_most(0), extra=extra))
    return out


# -- layers that settle -------------------------------------------------------------------

def _settling_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    out = []
    labels = list(keys.get("similarity_to_final", {}))
    for label in labels:
        thresholds = {r.meta.get("layer"): float(r.meta.get("threshold", SETTLE_THRESHOLD))
                      for r in keys.get("steps_to_threshold", {}).get(label, [])}
        layers: dict[str, list[Record]] = defaultdict(list)
        for r in keys["similarity_to_final"][label]:
            layers[str(r.meta.get("layer"))].append(r)
        for layer, recs in layers.items():
            recs = sorted(recs, key=lambda r: r.meta.get("checkpoint_step", r.step))
            steps = [int(r.meta.get("checkpoint_step", r.step)) for r in recs]
            values = [r.value for r in recs]
            thr = thresholds.get(layer, SETTLE_THRESHOLD)
            method = recs[0].meta.get("method", "cka")
            final = steps[-1]
            fid = f"layer-settled:{layer}" + _suffix(label, labels)
            extra: dict[str, Any] = {"threshold": thr, "final_step": final,
                                     "checkpoints": len(steps), "method": method}
            if any(not math.isfinite(v) for v in values[:-1]) or len(steps) < 2:
                why = ("only the final state was measured" if len(steps) < 2 else
                       next((str(r.meta.get("note")) for r in recs if "note" in r.meta),
                            "undefined similarity"))
                out.append(_finding(fid, f"Layer {layer}: not reliable ({why}).",
                                    "settled_before_end", math.nan, at_least(1),
                                    extra=extra | {"reliable": False}))
                continue
            settled = final  # the earliest checkpoint from which every later one is >= thr
            for s, v in zip(reversed(steps), reversed(values), strict=True):
                if v >= thr:
                    settled = s
                else:
                    break
            before_final = values[-2]
            extra |= {"settled_at_step": settled, "similarity_before_end": before_final,
                      "step_before_end": steps[-2]}
            if settled < final:
                reading = (f"Layer {layer} settled at step {settled} of {final}: from then "
                           f"on its {method.upper()} to its final representation stayed >= "
                           f"{thr:g}.")
            else:
                reading = (f"Layer {layer} still moves: at step {steps[-2]}, the last "
                           f"checkpoint before the end ({final}), its {method.upper()} to its "
                           f"final representation was {_g(before_final)} < {thr:g}.")
            out.append(_finding(fid, reading, "settled_before_end", float(settled < final),
                                at_least(1), extra=extra))
    return out


# -- sharpness and the edge of stability ---------------------------------------------------

def stability_threshold(lr: float, optimizer: str | None = None, momentum: float = 0.0,
                        nesterov: bool = False) -> float:
    """The sharpness above which gradient descent on a quadratic diverges: ``2 / lr``;
    with heavy-ball momentum ``beta`` ``(2 + 2 beta) / lr``, with Nesterov momentum
    ``(2 + 2 beta) / ((1 + 2 beta) lr)`` (Cohen et al. 2021). NaN for adaptive optimizers
    (their threshold concerns the preconditioned sharpness) and for a non-positive lr."""
    if not lr or lr <= 0 or (optimizer is not None and optimizer != "SGD"):
        return math.nan
    if nesterov:
        return (2 + 2 * momentum) / ((1 + 2 * momentum) * lr)
    return (2 + 2 * momentum) / lr


def _lr_at(lr_steps: Sequence[Sequence[float]], step: int) -> float:
    """The learning rate in effect at ``step`` (the first one before any change is known)."""
    lr = float(lr_steps[0][1]) if lr_steps else math.nan
    for s, v in lr_steps:
        if s <= step:
            lr = float(v)
    return lr


def _edge_findings(keys: dict[str, dict[str, list[Record]]],
                   optim: Mapping[str, Any]) -> list[Claim]:
    out = []
    labels = list(keys.get("hessian_top_eigenvalue", {}))
    for label in labels:
        recs = sorted(keys["hessian_top_eigenvalue"][label], key=lambda r: r.step)
        last = recs[-1]
        fid = "edge-of-stability" + _suffix(label, labels)
        extra: dict[str, Any] = {"sharpness": last.value, "step": last.step,
                                 "converged": last.meta.get("converged")}
        kind = optim.get("optimizer")
        lr_steps = optim.get("lr_steps") or []
        if not lr_steps:
            out.append(_finding(fid, f"Sharpness (top Hessian eigenvalue) {_g(last.value)} at "
                                f"step {last.step}; no learning rate known: pass optimizer= "
                                "or lr= to the Scope to compare it with 2/lr.",
                                "sharpness_over_threshold", math.nan, at_least(EDGE_BAND),
                                extra=extra | {"reliable": False}))
            continue
        momentum = float(optim.get("momentum") or 0.0)
        nesterov = bool(optim.get("nesterov"))
        thresholds = [stability_threshold(_lr_at(lr_steps, r.step), kind, momentum, nesterov)
                      for r in recs]
        thr = thresholds[-1]
        lr = _lr_at(lr_steps, last.step)
        extra |= {"learning_rate": lr, "threshold": thr, "optimizer": kind or "unknown",
                  "momentum": momentum}
        if not math.isfinite(thr):
            out.append(_finding(fid, f"Sharpness {_g(last.value)} at step {last.step}; the "
                                f"2/lr stability threshold applies to (momentum) SGD, not to "
                                f"{kind}, whose threshold concerns the preconditioned sharpness: "
                                "no edge-of-stability reading.", "sharpness_over_threshold",
                                math.nan, at_least(EDGE_BAND),
                                extra=extra | {"reliable": False}))
            continue
        ratios = [r.value / t for r, t in zip(recs, thresholds, strict=True)
                  if math.isfinite(r.value) and math.isfinite(t)]
        ratio = last.value / thr
        extra["max_ratio"] = max(ratios) if ratios else math.nan
        form = ("(2 + 2 beta)/((1 + 2 beta) lr)" if nesterov else
                "(2 + 2 beta)/lr" if momentum else "2/lr")
        reading = (f"Sharpness {_g(last.value)} at step {last.step} vs the stability threshold "
                   f"{form} = {_g(thr)} (lr {lr:g}" + (f", momentum {momentum:g}" if momentum
                                                       else "") + f"): ratio {ratio:.2f}. ")
        if ratio > 1.1:
            reading += ("Beyond the threshold: gradient descent at this step size is unstable "
                        "along the top direction (it oscillates there); full-batch training "
                        "hovers there at the edge of stability (Cohen et al. 2021).")
        elif ratio >= EDGE_BAND:
            reading += ("At the edge of stability (Cohen et al. 2021): the step size, not the "
                        "loss surface, caps the sharpness.")
        else:
            reading += ("Below the edge: the step size does not limit the curvature here "
                        "(minibatch SGD usually stays below 2/lr; the highest ratio in the "
                        f"run was {_g(extra['max_ratio'])}).")
        if last.meta.get("converged") is False:
            reading += " The eigenvalue solver did not converge: not reliable."
            extra["reliable"] = False
        out.append(_finding(fid, reading, "sharpness_over_threshold",
                            ratio if extra.get("reliable", True) else math.nan,
                            at_least(EDGE_BAND), extra=extra))
    return out


# -- gradient noise scale -----------------------------------------------------------------

def _noise_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    out = []
    labels = list(keys.get("grad_noise_scale", {}))
    for label in labels:
        recs = sorted(keys["grad_noise_scale"][label], key=lambda r: r.step)
        unb = {r.step: r.value for r in keys.get("grad_noise_scale_unbiased", {}).get(label, [])}
        last, first = recs[-1], recs[0]
        n = int(last.meta.get("n_examples", 0)) or math.nan
        b_unb = unb.get(last.step, math.nan)
        reliable = math.isfinite(b_unb) and b_unb > 0 and b_unb <= n
        b = b_unb if math.isfinite(b_unb) and b_unb > 0 else last.value
        extra: dict[str, Any] = {"B_simple_plugin": last.value, "B_simple_unbiased": b_unb,
                                 "n_examples": n, "step": last.step, "reliable": reliable,
                                 "B_simple_first": first.value, "first_step": first.step}
        reading = (f"Gradient noise scale B_simple = {_g(b)} examples at step {last.step}"
                   + (f" ({_g(first.value)} at step {first.step})" if len(recs) > 1 else "")
                   + ". By McCandlish et al. 2018 the useful batch size is about B_simple: "
                   f"suggested batch size ~{max(1, round(b)) if math.isfinite(b) else '?'}; "
                   "well above it extra examples per batch are mostly wasted, well below it "
                   "each step is dominated by gradient noise.")
        if not reliable:
            reading += (f" Not reliable: measured on {n} examples, the bias-corrected signal "
                        + ("is <= 0 (noise dominates)" if not (math.isfinite(b_unb) and b_unb > 0)
                           else f"gives B = {_g(b_unb)} > n")
                        + "; measure with n_examples well above B_simple.")
        else:
            extra["suggested_batch_size"] = max(1, round(b))
        out.append(_finding("gradient-noise-scale" + _suffix(label, labels), reading,
                            "B_simple_over_n_examples", b_unb / n if reliable else math.nan,
                            at_most(1), extra=extra))
    return out


# -- weight-spectrum tails ----------------------------------------------------------------

def _alpha_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    out = []
    labels = list(keys.get("alpha", {}))
    for label in labels:
        last: dict[str, Record] = {}
        for r in sorted(keys["alpha"][label], key=lambda r: r.step):
            last[str(r.meta.get("layer"))] = r
        for layer, r in last.items():
            fid = f"weight-tail:{layer}" + _suffix(label, labels)
            extra = {"step": r.step, "n_tail": r.meta.get("n_tail"),
                     "reliable": bool(r.meta.get("reliable", False))}
            a = r.value
            if not extra["reliable"] or not math.isfinite(a):
                out.append(_finding(fid, f"Layer {layer}: tail exponent alpha = {_g(a)}, not "
                                    f"reliable ({r.meta.get('reason') or 'no fit'}).",
                                    "alpha", math.nan, between(2, 6),
                                    extra=extra | {"alpha_unreliable_fit": a}))
                continue
            reading = (f"Layer {layer}: weight-spectrum tail exponent alpha = {a:.2f} at step "
                       f"{r.step}; " + (
                           "in [2, 6], the range Martin & Mahoney associate with well-trained "
                           "layers." if 2 <= a <= 6 else
                           "below 2: very heavy-tailed, which Martin & Mahoney read as "
                           "over-trained (over-fitted) layers." if a < 2 else
                           "above 6: close to random, which Martin & Mahoney read as an "
                           "under-trained layer."))
            out.append(_finding(fid, reading, "alpha", a, between(2, 6), extra=extra))
    return out


# -- gradient flow across depth -----------------------------------------------------------

def _flow_findings(keys: dict[str, dict[str, list[Record]]]) -> list[Claim]:
    out = []
    labels = list(keys.get("grad_norm", {}))
    for label in labels:
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for r in keys["grad_norm"][label]:
            p = str(r.meta.get("parameter"))
            if p != "all":
                by_step[r.step][p] = r.value
        if not by_step:
            continue
        names = list(next(iter(by_step.values())))
        weights = [n for n in names if n.endswith("weight")] or names
        if len(weights) < 2:
            continue
        first, last = weights[0], weights[-1]
        ratios = []
        for values in by_step.values():
            a, b = values.get(first, math.nan), values.get(last, math.nan)
            ratios.append(a / b if b > 0 and math.isfinite(a) else
                          (math.inf if a > 0 else math.nan))
        finite = sorted(v for v in ratios if not math.isnan(v))
        median = finite[len(finite) // 2] if finite else math.nan
        final_step = max(by_step)
        extra = {"first_parameter": first, "last_parameter": last,
                 "first_grad_norm": by_step[final_step].get(first),
                 "last_grad_norm": by_step[final_step].get(last),
                 "final_ratio": ratios[list(by_step).index(final_step)],
                 "measurements": len(ratios), "factor": FLOW_FACTOR}
        a_end = by_step[final_step].get(first, math.nan)
        b_end = by_step[final_step].get(last, math.nan)
        times = f"{len(ratios)} measurement" + ("s" if len(ratios) != 1 else "")
        reading = (f"Gradient norm of the first layer ({first}) over the last ({last}): median "
                   f"{_g(median)} over {times} ({_g(a_end)} vs {_g(b_end)} at step "
                   f"{final_step}). ")
        reading += ("Vanishing gradients: the early layers receive almost no signal."
                    if median < 1 / FLOW_FACTOR else
                    "Exploding gradients toward the input." if median > FLOW_FACTOR else
                    f"No sign of vanishing or exploding gradients (within a factor "
                    f"{FLOW_FACTOR:g} either way).")
        out.append(_finding("gradient-flow" + _suffix(label, labels), reading,
                            "median_first_over_last", median,
                            between(1 / FLOW_FACTOR, FLOW_FACTOR), extra=extra))
    return out


# -- dead units ---------------------------------------------------------------------------

@torch.no_grad()
def dead_unit_counts(model: nn.Module, inputs: torch.Tensor, batch_size: int = 4096) -> dict[str, dict[str, int]]:
    """Per ``nn.ReLU`` module: how many of its output units are 0 on every example of
    ``inputs`` (dead on this data), in eval mode. ``{layer: {"dead", "units", "examples"}}``;
    ReLUs applied as functions (``F.relu``) are not seen. Channels of a convolution count per
    position. The model's train/eval flags are restored."""
    from learnscope.measures._readonly import eval_mode, on_model_device
    from learnscope.probes.base import capture

    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not names or inputs.shape[0] == 0:
        return {}
    alive: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        for i in range(0, inputs.shape[0], batch_size):
            with capture(model, names) as acts:
                model(on_model_device(model, inputs[i:i + batch_size]))
            for n, a in acts.items():
                hit = (a > 0).any(dim=0).cpu()
                alive[n] = hit if n not in alive else alive[n] | hit
    return {n: {"dead": int((~a).sum()), "units": int(a.numel()),
                "examples": int(inputs.shape[0])} for n, a in alive.items()}


def _dead_findings(dead: Mapping[str, Mapping[str, int]]) -> list[Claim]:
    out = []
    for layer, d in dead.items():
        frac = d["dead"] / d["units"] if d["units"] else math.nan
        reading = (f"Layer {layer}: {d['dead']} of {d['units']} ReLU units "
                   f"({100 * frac:.1f}%) never activate on the {d['examples']} probe examples"
                   + (": dead units, which no longer learn." if frac > DEAD_FLAG else "."))
        out.append(_finding(f"dead-units:{layer}", reading, "dead_fraction", frac,
                            at_most(DEAD_FLAG), extra=dict(d)))
    return out


# -- all ------------------------------------------------------------------------------------

def compute_findings(records: Sequence[Record],
                     context: Mapping[str, Any] | None = None) -> list[Claim]:
    """Every finding the records (and ``context``) allow, in reading order.

    ``context`` (all optional): ``optimizer`` ``{"optimizer": "SGD", "momentum": 0.9,
    "nesterov": False, "lr_steps": [[step, lr], ...]}`` (the lr from that step on);
    ``examples`` ``{probe label: {"<index>": {"label": ..., "prediction": ...}}}``; ``dead_units`` as
    returned by :func:`dead_unit_counts`.
    """
    ctx = context or {}
    keys = _by_key(records)
    return (_loss_findings(keys) + _generalization_findings(keys)
            + _suspicious_findings(keys, ctx.get("examples") or {})
            + _settling_findings(keys) + _edge_findings(keys, ctx.get("optimizer") or {})
            + _noise_findings(keys) + _alpha_findings(keys) + _flow_findings(keys)
            + _dead_findings(ctx.get("dead_units") or {}))
