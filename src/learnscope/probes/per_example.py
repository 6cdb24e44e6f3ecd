"""Per-example dynamics probe: learning time, forgetting events, data maps, suspicious examples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from learnscope.measures._readonly import on_model_device
from learnscope.measures.per_example import (
    DEFAULT_SUSPICION_METHOD,
    SUSPICION_METHODS,
    PerExampleHistory,
    PerExampleTracker,
    detection_auroc,
    margin,
)
from learnscope.probes.base import Probe, ProbeContext, eval_mode
from learnscope.probes.checks import check_int, check_schedule
from learnscope.probes.schedule import Schedule, per_epoch
from learnscope.store.records import Record

__all__ = ["PerExampleProbe"]

_PASS = "eval pass (eval mode, no grad) over the training set, not online"


class PerExampleProbe(Probe):
    """Per-example training dynamics on the training set you pass: at every run, a separate
    evaluation pass over ``inputs`` records each example's correctness, probability of its
    assigned label and margin (a ``PerExampleTracker`` with ``source="eval"``); when the scope
    closes, the learning time, forgetting events, data-map coordinates and a ranking of the
    most suspicious (mislabeled / memorised-looking) examples.

    Each run records ``fraction_correct``, ``mean_margin`` and ``mean_prob_true`` (meta
    ``subset="all"``), and with ``noisy_mask`` also ``fraction_correct`` on ``subset="noisy"``
    and ``"clean"`` (memorisation of flipped labels). At the end: ``n_never_learned``,
    ``mean_learned_epoch`` (the epoch of the measurement from which an example stays
    correct, averaged over the learned ones), ``n_forgetting_events``,
    ``n_forgotten_examples`` (at least one event), one ``suspicious_example`` record per rank
    ``r < top_k`` (value = example index; meta: rank, score, method, aum, fit_weighted_aum,
    confidence, variability, learned_epoch, forgetting) and, with ``noisy_mask``,
    ``suspicious_precision_at_k`` (the fraction of those ``top_k`` that are truly noisy) and
    ``suspicious_auroc`` (the probability that a random noisy example is ranked above a random
    clean one, over all ``n`` examples). ``history()`` returns the full
    :class:`~learnscope.measures.per_example.PerExampleHistory`.

    The ranking's score is ``rank_by`` (meta ``method``; see
    :func:`~learnscope.measures.per_example.rank_suspicious`): by default
    ``"fit_weighted_aum"``, the area under the margin with each measurement weighted by the
    fraction of ``inputs`` still misclassified then; ``"aum"`` (plain area under the margin),
    ``"confidence"`` (1 - data-map confidence) and ``"combined"`` (confidence, lateness and
    forgetting, equally weighted) are the alternatives.

    Each measurement is one "epoch" of the tracker, so forgetting counts changes between
    consecutive runs of this probe: use ``per_epoch()`` (the default) for Toneva et al.'s
    per-epoch protocol. The final state is measured in ``finish`` unless it already was.

    Cost: forward (its own batched pass over ``inputs``, not the scope's data).
    Sources: Toneva et al. 2019 (forgetting events); Swayamdipta et al. 2020 (data maps);
    Pleiss et al. 2020 (area under the margin); Arpit et al. 2017 (noisy labels are learned
    late, by memorisation).

    Args:
        inputs: the training inputs (or a fixed subset of them), ``(n, ...)``.
        targets: their assigned (possibly noisy) integer labels, ``(n,)``.
        schedule: when to measure.
        noisy_mask: optional bool ``(n,)``, True where the label was corrupted.
        top_k: how many suspicious examples to report.
        batch_size: batch size of the evaluation pass.
        rank_by: the suspicion score, one of ``SUSPICION_METHODS``.
    """

    name = "per_example"
    cost = "forward"
    source = "Toneva et al. 2019; Swayamdipta et al. 2020; Pleiss et al. 2020; Arpit et al. 2017"
    needs_activations = False
    needs_outputs = False

    def __init__(self, inputs: Any, targets: Any, *, schedule: Schedule | None = None,
                 noisy_mask: Any = None, top_k: int = 20, batch_size: int = 4096,
                 rank_by: str = DEFAULT_SUSPICION_METHOD) -> None:
        self.schedule = check_schedule(schedule, per_epoch())
        self.inputs = torch.as_tensor(inputs)
        if self.inputs.ndim < 1 or self.inputs.shape[0] == 0:
            raise ValueError(f"inputs must be a non-empty batch (n, ...), got shape "
                             f"{tuple(self.inputs.shape)}")
        n = int(self.inputs.shape[0])
        self.targets = torch.as_tensor(targets)
        if self.targets.ndim != 1 or self.targets.shape[0] != n:
            raise ValueError(f"targets must have shape ({n},) to match inputs, got "
                             f"{tuple(self.targets.shape)}")
        if self.targets.dtype.is_floating_point or self.targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class labels, got {self.targets.dtype}")
        self.targets = self.targets.to(torch.long)
        if noisy_mask is None:
            self.noisy_mask = None
        else:
            mask = torch.as_tensor(noisy_mask)
            if mask.ndim != 1 or mask.shape[0] != n:
                raise ValueError(f"noisy_mask must have shape ({n},) to match inputs, got "
                                 f"{tuple(mask.shape)}")
            if mask.dtype != torch.bool:
                if mask.dtype.is_floating_point or not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError("noisy_mask must be boolean (or 0/1 integers)")
                mask = mask.to(torch.bool)
            self.noisy_mask = mask
        self.top_k = check_int(top_k, "top_k", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        if rank_by not in SUSPICION_METHODS:
            raise ValueError(f"rank_by must be one of {SUSPICION_METHODS}, got {rank_by!r}")
        self.rank_by = rank_by
        self._tracker = PerExampleTracker(n)
        self._steps: list[int] = []
        self._epochs: list[int] = []

    def setup(self, model: nn.Module) -> None:
        self._tracker.reset()
        self._steps, self._epochs = [], []

    def uses_output(self) -> bool:
        return True

    def own_inputs(self) -> torch.Tensor:
        return self.inputs

    def _logits(self, ctx: ProbeContext) -> torch.Tensor:
        model = ctx.model
        out = []
        with torch.no_grad(), eval_mode(model):
            for i in range(0, self.inputs.shape[0], self.batch_size):
                z = ctx.select(model(on_model_device(model, self.inputs[i:i + self.batch_size])))
                out.append(z.detach().cpu())
        return torch.cat(out)

    def measure(self, ctx: ProbeContext) -> list[Record]:
        logits = self._logits(ctx)
        if logits.ndim != 2 or logits.shape[0] != self.inputs.shape[0]:
            raise ValueError(f"PerExampleProbe needs class logits (n, k) from the model, got "
                             f"shape {tuple(logits.shape)}")
        self._tracker.update(logits, self.targets, source="eval")
        self._steps.append(ctx.step)
        self._epochs.append(ctx.epoch)
        # The same quantities the tracker stores for this epoch (float64, as it computes them).
        z = logits.to(torch.float64)
        correct = (z.argmax(dim=1) == self.targets).numpy()
        prob = torch.exp(torch.log_softmax(z, dim=1).gather(1, self.targets[:, None])[:, 0])
        marg = margin(z, self.targets)
        n = int(correct.shape[0])
        meta = {"source": "eval", "pass": _PASS, "n": n}
        recs = [Record("fraction_correct", float(correct.mean()), meta=meta | {"subset": "all"}),
                Record("mean_margin", float(marg.mean()), meta=meta | {"subset": "all"}),
                Record("mean_prob_true", float(prob.mean()), meta=meta | {"subset": "all"})]
        if self.noisy_mask is not None:
            noisy = self.noisy_mask.numpy()
            for subset, sel in (("noisy", noisy), ("clean", ~noisy)):
                k = int(sel.sum())
                sub = meta | {"subset": subset, "n": k}
                if k:
                    recs.append(Record("fraction_correct", float(correct[sel].mean()), meta=sub))
                else:
                    recs.append(Record("fraction_correct", math.nan,
                                       meta=sub | {"note": f"no {subset} examples"}))
        return recs

    def history(self) -> PerExampleHistory:
        """Everything the tracker computed from the measurements so far (``[measurement,
        example]`` histories, learned epoch as a measurement index, forgetting, data map,
        ranking). ValueError before the first measurement."""
        return self._tracker.compute(method=self.rank_by)

    def finish(self, ctx: ProbeContext) -> list[Record]:
        recs: list[Record] = []
        if not self._steps or self._steps[-1] != ctx.step:
            recs += self.measure(ctx)  # the final state was not measured yet
        hist = self.history()
        epochs = np.asarray(self._epochs, dtype=np.int64)
        n = hist.n_examples
        meta = {"source": "eval", "pass": _PASS, "n": n, "measurements": hist.n_epochs}
        le = hist.learned_epoch
        learned = le >= 0
        learned_at = np.where(learned, epochs[np.maximum(le, 0)], -1)
        recs.append(Record("n_never_learned", float(np.sum(~learned)), meta=meta))
        if learned.any():
            recs.append(Record("mean_learned_epoch", float(learned_at[learned].mean()),
                               meta=meta | {"n_learned": int(learned.sum())}))
        else:
            recs.append(Record("mean_learned_epoch", math.nan,
                               meta=meta | {"n_learned": 0, "note": "no example was learned"}))
        events = hist.forgetting_events
        recs.append(Record("n_forgetting_events", float(events.sum()), meta=meta))
        recs.append(Record("n_forgotten_examples", float(np.sum(events > 0)), meta=meta))
        ranking, dmap = hist.ranking, hist.data_map
        k = min(self.top_k, n)
        top = ranking.indices[:k]
        assert ranking.aum is not None and ranking.fit_weighted_aum is not None  # eval margins
        for rank, idx in enumerate(top.tolist()):
            extra = {"weights": list(ranking.weights)} if ranking.method == "combined" else {}
            recs.append(Record("suspicious_example", float(idx), meta={
                "rank": rank, "score": float(ranking.scores[idx]), "method": ranking.method,
                "aum": float(ranking.aum[idx]),
                "fit_weighted_aum": float(ranking.fit_weighted_aum[idx]),
                "confidence": float(dmap.confidence[idx]),
                "variability": float(dmap.variability[idx]),
                "learned_epoch": int(learned_at[idx]), "forgetting": int(events[idx]),
                "source": "eval"} | extra))
        if self.noisy_mask is not None:
            noisy = self.noisy_mask.numpy()
            n_noisy = int(noisy.sum())
            rmeta = meta | {"method": ranking.method, "n_noisy": n_noisy}
            recs.append(Record("suspicious_precision_at_k", float(noisy[top].mean()),
                               meta=rmeta | {"k": k}))
            if 0 < n_noisy < n:
                auc = detection_auroc(ranking.scores, noisy)
                recs.append(Record("suspicious_auroc", auc, meta=rmeta))
            else:
                recs.append(Record("suspicious_auroc", math.nan, meta=rmeta | {
                    "note": "needs both noisy and clean examples"}))
        return recs

