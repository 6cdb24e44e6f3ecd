"""Per-example training dynamics: learning time, forgetting, data maps, suspicion ranking.

All functions operate on histories indexed ``[epoch, example]``:

* ``correct[epoch, example]`` (bool): the prediction was the assigned label;
* ``prob_true[epoch, example]``: the softmax probability of the assigned label;
* ``margins[epoch, example]``: logit of the assigned class minus the largest other.

Sources: Toneva et al. 2019, "An empirical study of example forgetting during
deep neural network learning" (ICLR); Swayamdipta et al. 2020, "Dataset
cartography: mapping and diagnosing datasets with training dynamics" (EMNLP);
for memorised / mislabeled examples being learned late, forgotten often and held
with low confidence: Arpit et al. 2017; Pleiss et al. 2020 (AUM); Feldman &
Zhang 2020. The default suspicion ranking is the area under the margin weighted by how
much of the training set is still unfitted at each epoch (:func:`rank_suspicious`).

:class:`PerExampleTracker` records the histories from logits, either from a
separate evaluation pass per epoch (``source="eval"``) or from the training
batches themselves (``source="online"``, Toneva's protocol). Arrays are numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_SUSPICION_METHOD",
    "SUSPICION_METHODS",
    "DataMap",
    "PerExampleHistory",
    "PerExampleTracker",
    "SuspicionRanking",
    "area_under_margin",
    "data_map",
    "detection_auroc",
    "forgetting_events",
    "learned_epoch",
    "margin",
    "rank_suspicious",
    "unfitted_fraction",
]


# --------------------------------------------------------------------------- helpers


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float64)  # bfloat16 / float16 have no (or lossy) numpy dtype
        return t.numpy()
    return np.asarray(x)


def _history_bool(correct: Any, name: str = "correct") -> np.ndarray:
    arr = _to_numpy(correct)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [epoch, example], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must be boolean (or 0/1), got other values")
        return arr.astype(bool)
    raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")


def _history_float(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [epoch, example], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- history measures


def learned_epoch(correct: Any) -> np.ndarray:
    """First epoch from which (inclusive) each example stays correct to the end; -1 if never.

    ``correct`` is a bool array ``[epoch, example]``. An example incorrect at the
    last epoch gets -1. Source: Toneva et al. 2019 ("learning event" after which an
    example is never forgotten).

    >>> learned_epoch(np.array([[0, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=bool)).tolist()
    [1, 0, -1]
    """
    c = _history_bool(correct)
    stays = np.flip(np.logical_and.accumulate(np.flip(c, axis=0), axis=0), axis=0)
    first = np.argmax(stays, axis=0)
    return np.where(stays[-1], first, -1).astype(np.int64)


def forgetting_events(correct: Any) -> np.ndarray:
    """Number of forgetting events (correct at epoch t, incorrect at t + 1) per example.

    Source: Toneva et al. 2019. Never-learned examples count 0 events here (Toneva
    et al. treat them as unforgettable-never/infinitely forgotten; combine with
    :func:`learned_epoch` to tell them apart).

    >>> forgetting_events(np.array([[1, 0], [0, 0], [1, 0], [0, 1]], dtype=bool)).tolist()
    [2, 0]
    """
    c = _history_bool(correct)
    return np.sum(c[:-1] & ~c[1:], axis=0).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DataMap:
    """Dataset-cartography coordinates per example (Swayamdipta et al. 2020).

    ``confidence`` = mean over epochs of ``prob_true``; ``variability`` = its
    standard deviation over epochs (``ddof`` = ``variability_ddof``);
    ``correctness`` = fraction of epochs counted correct, from the ``correct``
    history (``correctness_method="correct"``) or, without one, from
    ``prob_true > 0.5`` (``"prob_gt_half"``, exact for two classes and a lower
    bound otherwise).
    """

    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray
    n_epochs: int
    variability_ddof: int
    correctness_method: str


def data_map(prob_true: Any, correct: Any = None, *, ddof: int = 0) -> DataMap:
    """Data-map coordinates (confidence, variability, correctness) of ``prob_true[epoch, example]``.

    Source: Swayamdipta et al. 2020, "Dataset cartography", eqs. 1-2 (population
    standard deviation, ``ddof=0``, as in the paper's code).

    >>> m = data_map(np.array([[0.25, 0.75], [0.75, 0.75]]))
    >>> m.confidence.tolist(), m.variability.tolist(), m.correctness.tolist()
    ([0.5, 0.75], [0.25, 0.0], [0.5, 1.0])
    """
    p = _history_float(prob_true, "prob_true")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("prob_true must lie in [0, 1]")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    if ddof == 1 and p.shape[0] < 2:
        raise ValueError("variability with ddof=1 needs at least 2 epochs")
    if correct is None:
        corr = np.mean(p > 0.5, axis=0)
        method = "prob_gt_half"
    else:
        c = _history_bool(correct)
        if c.shape != p.shape:
            raise ValueError(f"correct has shape {c.shape} but prob_true has shape {p.shape}")
        corr = np.mean(c, axis=0)
        method = "correct"
    return DataMap(
        confidence=_readonly(np.mean(p, axis=0)),
        variability=_readonly(np.std(p, axis=0, ddof=ddof)),
        correctness=_readonly(corr.astype(np.float64)),
        n_epochs=int(p.shape[0]),
        variability_ddof=int(ddof),
        correctness_method=method,
    )


def unfitted_fraction(correct: Any) -> np.ndarray:
    """Fraction of examples misclassified at each epoch, ``1 - mean_example correct``.

    The weight of an epoch in :func:`area_under_margin` for the default ranking: it is large
    while the network is still learning and 0 once it fits every example.

    >>> unfitted_fraction(np.array([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=bool)).tolist()
    [0.5, 0.0]
    """
    c = _history_bool(correct)
    return (1.0 - c.mean(axis=1)).astype(np.float64)


def area_under_margin(margins: Any, epoch_weights: Any = None) -> np.ndarray:
    """Area under the margin (AUM): the mean over epochs of each example's margin.

    ``margins[epoch, example]`` is the assigned-label logit minus the largest other
    (:func:`margin`); low AUM = the network keeps preferring another class = likely
    mislabeled (Pleiss et al. 2020, "Identifying mislabeled data using the area under the
    margin ranking", NeurIPS). With ``epoch_weights`` (one non-negative number per epoch,
    positive sum) it is the weighted mean ``sum_e w_e margin_e / sum_e w_e``.

    >>> area_under_margin(np.array([[1.0, -2.0], [3.0, 0.0]])).tolist()
    [2.0, -1.0]
    >>> area_under_margin(np.array([[1.0, -2.0], [3.0, 0.0]]), [3.0, 1.0]).tolist()
    [1.5, -1.5]
    """
    mg = _history_float(margins, "margins")
    if epoch_weights is None:
        return mg.mean(axis=0)
    w = _to_numpy(epoch_weights).astype(np.float64)
    if w.shape != (mg.shape[0],):
        raise ValueError(f"epoch_weights must have shape ({mg.shape[0]},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("epoch_weights must be finite, non-negative, with a positive sum")
    return (w @ mg) / w.sum()


SUSPICION_METHODS = ("fit_weighted_aum", "aum", "confidence", "combined")
DEFAULT_SUSPICION_METHOD = "fit_weighted_aum"


@dataclass(frozen=True, eq=False)
class SuspicionRanking:
    """Examples ordered from most to least suspicious (memorised / mislabeled-looking).

    ``indices`` is the ranking (most suspicious first, ties by index); ``scores`` (higher =
    more suspicious; units depend on ``method``) and the per-example terms are in the
    original order. ``method`` names the score that ordered ``indices`` (see
    :func:`rank_suspicious`). ``aum`` and ``fit_weighted_aum`` are the plain and the
    fit-weighted area under the margin (None without margins); ``epoch_weights`` are the
    weights the fit-weighted AUM used. ``low_confidence``, ``lateness`` and ``forgetting``
    are the terms of ``method="combined"``, whose weights are ``weights``;
    ``confidence_source`` says where ``low_confidence`` came from.
    """

    indices: np.ndarray
    scores: np.ndarray
    method: str
    aum: np.ndarray | None
    fit_weighted_aum: np.ndarray | None
    epoch_weights: np.ndarray
    low_confidence: np.ndarray
    lateness: np.ndarray
    forgetting: np.ndarray
    weights: tuple[float, float, float]
    confidence_source: str


def rank_suspicious(
    correct: Any,
    prob_true: Any = None,
    *,
    margins: Any = None,
    method: str = DEFAULT_SUSPICION_METHOD,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> SuspicionRanking:
    """Rank examples by how mislabeled / memorised they look (most suspicious first).

    ``method`` chooses the score (higher = more suspicious):

    * ``"fit_weighted_aum"`` (default; needs ``margins``): minus the area under the margin
      with each epoch weighted by the fraction of examples the network still misclassifies
      then (:func:`unfitted_fraction`). A mislabeled example has a low margin while the
      network learns the rule shared by its class and a high one only once the network
      memorises it (Arpit et al. 2017); the weights keep the epochs after the training set
      is fitted, whose margins only say what was memorised, from diluting the average, so
      the score does not depend on how long training continued after that. If the network
      fitted every example at every recorded epoch (all weights 0), plain AUM is used.
      On MNIST-1D with 10-40% flipped labels this ranks the flipped examples at least as
      well as confident learning on out-of-fold probabilities
      (``benchmarks/label_noise_detection.py``);
    * ``"aum"`` (needs ``margins``): minus the plain mean of the margin over all recorded
      epochs (Pleiss et al. 2020, who stop at the first learning-rate drop);
    * ``"confidence"``: ``low_confidence`` alone, 1 - the data-map confidence
      (Swayamdipta et al. 2020);
    * ``"combined"``: the weighted mean of three terms in ``[0, 1]``,
      ``(w_c * low_confidence + w_l * lateness + w_f * forgetting) / (w_c + w_l + w_f)``.

    The terms: ``low_confidence = 1 - mean_e prob_true``; without ``prob_true``,
    ``1 - mean_e sigmoid(margin)``; with neither, ``1 - fraction of epochs correct``.
    ``lateness = learned_epoch / n_epochs``, 1 for never-learned examples (Arpit et al.
    2017). ``forgetting = forgetting_events / max(1, n_epochs // 2)`` (the most events
    possible; Toneva et al. 2019).

    >>> c = np.array([[0, 1], [1, 1], [0, 1], [0, 1]], dtype=bool)
    >>> rank_suspicious(c, margins=np.where(c, 1.0, -1.0)).indices.tolist()
    [0, 1]
    """
    if method not in SUSPICION_METHODS:
        raise ValueError(f"method must be one of {SUSPICION_METHODS}, got {method!r}")
    c = _history_bool(correct)
    n_epochs = c.shape[0]
    mg: np.ndarray | None = None
    if margins is not None:
        mg = _history_float(margins, "margins")
        if mg.shape != c.shape:
            raise ValueError(f"margins has shape {mg.shape} but correct has shape {c.shape}")
    if prob_true is not None:
        p = _history_float(prob_true, "prob_true")
        if p.shape != c.shape:
            raise ValueError(f"prob_true has shape {p.shape} but correct has shape {c.shape}")
        if np.any(p < 0) or np.any(p > 1):
            raise ValueError("prob_true must lie in [0, 1]")
        low_conf = 1.0 - p.mean(axis=0)
        source = "prob_true"
    elif mg is not None:
        low_conf = 1.0 - (0.5 * (1.0 + np.tanh(0.5 * mg))).mean(axis=0)  # stable sigmoid
        source = "margin_sigmoid"
    else:
        low_conf = 1.0 - c.mean(axis=0)
        source = "correct_fraction"

    w = tuple(float(v) for v in weights)
    if len(w) != 3 or not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
        raise ValueError(
            f"weights must be three non-negative numbers with a positive sum, got {weights!r}"
        )
    le = learned_epoch(c)
    lateness = np.where(le < 0, 1.0, le / n_epochs)
    forgetting = forgetting_events(c) / max(1, n_epochs // 2)

    epoch_weights = unfitted_fraction(c)
    if epoch_weights.sum() <= 0:
        epoch_weights = np.ones(n_epochs)  # fitted throughout: every epoch counts the same
    aum = fw_aum = None
    if mg is not None:
        aum = area_under_margin(mg)
        fw_aum = area_under_margin(mg, epoch_weights)
    elif method in ("fit_weighted_aum", "aum"):
        raise ValueError(
            f"method {method!r} needs margins (PerExampleTracker records them); "
            "without margins use method='confidence' or 'combined'"
        )

    if method == "fit_weighted_aum":
        assert fw_aum is not None
        score = -fw_aum
    elif method == "aum":
        assert aum is not None
        score = -aum
    elif method == "confidence":
        score = low_conf
    else:
        score = (w[0] * low_conf + w[1] * lateness + w[2] * forgetting) / sum(w)
    order = np.argsort(-score, kind="stable")
    return SuspicionRanking(
        indices=_readonly(order.astype(np.int64)),
        scores=_readonly(score.astype(np.float64)),
        method=method,
        aum=None if aum is None else _readonly(aum),
        fit_weighted_aum=None if fw_aum is None else _readonly(fw_aum),
        epoch_weights=_readonly(epoch_weights),
        low_confidence=_readonly(low_conf.astype(np.float64)),
        lateness=_readonly(lateness.astype(np.float64)),
        forgetting=_readonly(forgetting.astype(np.float64)),
        weights=(w[0], w[1], w[2]),
        confidence_source=source,
    )


def detection_auroc(scores: Any, is_positive: Any) -> float:
    """Area under the ROC curve of ``scores`` for finding the ``is_positive`` examples.

    The probability that a random positive (e.g. a flipped label) scores higher than a random
    negative, ties counting 1/2 (the Mann-Whitney statistic, from midranks). 0.5 = chance.

    >>> detection_auroc([3.0, 1.0, 2.0, 2.0], [True, False, True, False])
    0.875
    """
    s = _to_numpy(scores).astype(np.float64)
    pos = _to_numpy(is_positive)
    if s.ndim != 1 or pos.shape != s.shape:
        raise ValueError(f"scores and is_positive must be 1-D of one length, got {s.shape} "
                         f"and {pos.shape}")
    if pos.dtype != bool:
        if pos.dtype.kind not in "iu" or not np.all((pos == 0) | (pos == 1)):
            raise ValueError("is_positive must be boolean (or 0/1 integers)")
        pos = pos.astype(bool)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("detection_auroc needs at least one positive and one negative example")
    from scipy.stats import rankdata  # here: importing scipy.stats takes ~1 s

    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --------------------------------------------------------------------------- margin


def margin(logits: Any, labels: Any) -> Any:
    """Margin: logit of the assigned class minus the largest other logit, per example.

    ``logits`` is ``(n, k)`` with ``k >= 2`` and ``labels`` is ``(n,)``. Returns a
    tensor for tensor logits and a numpy array otherwise. Positive margin =
    correctly classified with no tie. Source: e.g. Pleiss et al. 2020 (AUM),
    Carlini et al. 2019.

    >>> margin(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0])).tolist()
    [1.0]
    """
    is_tensor = isinstance(logits, torch.Tensor)
    z = logits.detach() if is_tensor else torch.as_tensor(np.asarray(logits, dtype=np.float64))
    if not z.is_floating_point():
        z = z.to(torch.float64)
    y = torch.as_tensor(_to_numpy(labels))
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (n, k), got shape {tuple(z.shape)}")
    n, k = z.shape
    if k < 2:
        raise ValueError(f"margin needs at least 2 classes, got {k}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{int(y.min())}, {int(y.max())}]")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits contain NaN or infinite values")
    y = y.to(device=z.device, dtype=torch.long)
    true = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    out = true - other
    return out if is_tensor else out.numpy()


# --------------------------------------------------------------------------- tracker


@dataclass(frozen=True, eq=False)
class PerExampleHistory:
    """Everything :class:`PerExampleTracker` computes from its recorded epochs.

    ``correct``, ``prob_true`` and ``margins`` are ``[epoch, example]``; ``source``
    is ``"eval"`` (a separate pass over the data each epoch) or ``"online"``
    (recorded from training batches, before the step on that batch). ``ranking.method``
    names the suspicion score that ordered ``ranking``.
    """

    correct: np.ndarray
    prob_true: np.ndarray
    margins: np.ndarray
    learned_epoch: np.ndarray
    forgetting_events: np.ndarray
    data_map: DataMap
    ranking: SuspicionRanking
    source: str
    n_epochs: int
    n_examples: int


_SOURCES = ("eval", "online")


class PerExampleTracker:
    """Accumulates per-example correctness, ``prob_true`` and margin over epochs.

    ``update(logits, labels)`` without ``example_ids`` records a full epoch (rows
    of ``logits`` are examples ``0..n-1``) and starts a new epoch each call. With
    ``example_ids`` (a batch) pass ``epoch=`` to say which epoch the batch belongs
    to (the current one or the next); an epoch must cover every example exactly
    once by :meth:`compute`. ``correct`` is ``argmax(logits) == label`` (ties go
    to the lowest class index, as ``torch.argmax``); ``prob_true`` is the softmax
    probability of the label. All of a tracker's updates share one ``source``.

    >>> tr = PerExampleTracker(2)
    >>> tr.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    >>> tr.compute().correct.tolist()
    [[True, False]]
    """

    def __init__(self, n_examples: int) -> None:
        if int(n_examples) != n_examples or n_examples < 1:
            raise ValueError(f"n_examples must be a positive integer, got {n_examples!r}")
        self.n_examples = int(n_examples)
        self.reset()

    def reset(self) -> None:
        """Forget every recorded epoch (and the source)."""
        self._correct: list[np.ndarray] = []
        self._prob: list[np.ndarray] = []
        self._margin: list[np.ndarray] = []
        self._seen: list[np.ndarray] = []
        self.source: str | None = None

    @property
    def n_epochs(self) -> int:
        """Number of epochs with at least one record."""
        return len(self._seen)

    def _new_epoch(self) -> None:
        n = self.n_examples
        self._correct.append(np.zeros(n, dtype=bool))
        self._prob.append(np.full(n, np.nan))
        self._margin.append(np.full(n, np.nan))
        self._seen.append(np.zeros(n, dtype=bool))

    def update(
        self,
        epoch_logits: Any,
        labels: Any,
        example_ids: Any = None,
        *,
        source: str = "eval",
        epoch: int | None = None,
    ) -> None:
        """Record logits ``(b, k)`` and labels ``(b,)`` for examples ``example_ids``.

        Without ``epoch`` each call opens a new epoch; with it the records go to
        that epoch (``0 <= epoch <= n_epochs``; ``epoch == n_epochs`` opens one).
        """
        if source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
        if self.source is not None and source != self.source:
            raise ValueError(
                f"this tracker records source={self.source!r}; got source={source!r} "
                "(use one tracker per source)"
            )
        z = torch.as_tensor(_to_numpy(epoch_logits)).to(torch.float64)
        if z.ndim != 2:
            raise ValueError(f"epoch_logits must be 2-D (b, k), got shape {tuple(z.shape)}")
        b = z.shape[0]
        if example_ids is None:
            if b != self.n_examples:
                raise ValueError(
                    f"without example_ids the logits must cover all {self.n_examples} "
                    f"examples, got {b} rows"
                )
            ids = np.arange(b)
        else:
            ids = _to_numpy(example_ids)
            if ids.ndim != 1 or ids.shape[0] != b:
                raise ValueError(f"example_ids must have shape ({b},), got {ids.shape}")
            if ids.dtype.kind not in "iu":
                raise ValueError(f"example_ids must be integers, got dtype {ids.dtype}")
            ids = ids.astype(np.int64)
            if b and (ids.min() < 0 or ids.max() >= self.n_examples):
                raise ValueError(f"example_ids must lie in [0, {self.n_examples})")
            if np.unique(ids).size != b:
                raise ValueError("example_ids contain duplicates")
        m = margin(z, labels)  # validates labels, classes and finiteness
        y = torch.as_tensor(_to_numpy(labels)).to(torch.long)
        logp = torch.log_softmax(z, dim=1).gather(1, y[:, None])[:, 0]
        corr = (z.argmax(dim=1) == y).numpy()

        if epoch is None:
            e = self.n_epochs
        else:
            if int(epoch) != epoch or epoch < 0 or epoch > self.n_epochs:
                raise ValueError(
                    f"epoch must be an integer in [0, {self.n_epochs}] (epochs are recorded "
                    f"in order), got {epoch!r}"
                )
            e = int(epoch)
        if e == self.n_epochs:
            self._new_epoch()
        if np.any(self._seen[e][ids]):
            dup = ids[self._seen[e][ids]][:5].tolist()
            raise ValueError(f"examples {dup} already recorded in epoch {e}")
        self._correct[e][ids] = corr
        self._prob[e][ids] = torch.exp(logp).numpy()
        self._margin[e][ids] = m.numpy()
        self._seen[e][ids] = True
        self.source = source

    def compute(self, *, method: str = DEFAULT_SUSPICION_METHOD) -> PerExampleHistory:
        """Histories and the derived measures, the ranking by ``method`` (see
        :func:`rank_suspicious`); ValueError if an epoch is incomplete."""
        if method not in SUSPICION_METHODS:
            raise ValueError(f"method must be one of {SUSPICION_METHODS}, got {method!r}")
        if self.n_epochs == 0:
            raise ValueError("nothing recorded yet: call update() first")
        for e, seen in enumerate(self._seen):
            if not seen.all():
                missing = np.flatnonzero(~seen)
                raise ValueError(
                    f"epoch {e} is missing {missing.size} of {self.n_examples} examples "
                    f"(first: {missing[:5].tolist()})"
                )
        correct = np.stack(self._correct)
        prob = np.stack(self._prob)
        marg = np.stack(self._margin)
        assert self.source is not None
        return PerExampleHistory(
            correct=_readonly(correct),
            prob_true=_readonly(prob),
            margins=_readonly(marg),
            learned_epoch=_readonly(learned_epoch(correct)),
            forgetting_events=_readonly(forgetting_events(correct)),
            data_map=data_map(prob, correct),
            ranking=rank_suspicious(correct, prob, margins=marg, method=method),
            source=self.source,
            n_epochs=int(correct.shape[0]),
            n_examples=self.n_examples,
        )
