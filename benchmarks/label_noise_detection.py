"""Label-noise detection: learnscope's per-example rankings against confident learning.

MNIST-1D (4000 training examples), a fraction of the training labels flipped to a different
class (``learnscope.data.flip_labels``: 10%, 20%, 40%), 3 seeds. On the same data:

* learnscope: an MLP 40-256-256-10 trained with Adam (lr 1e-3, batch 100, 60 epochs; it fits
  every flipped label) while ``PerExampleProbe`` records its per-epoch evaluation pass; every
  ranking method of ``rank_suspicious`` scores that one history: ``fit_weighted_aum`` (the
  default), ``aum``, ``confidence``, ``combined`` (the default before), and the lateness and
  forgetting terms alone;
* confident learning: 5-fold out-of-fold predicted probabilities of scikit-learn's
  ``MLPClassifier`` (256-256, early stopping; stronger here than the default 100 units or
  256-256 without early stopping), ``cleanlab.filter.find_label_issues`` on them (its flagged
  set: size, precision, recall, and precision at k of its ranked list), and the AUROC and
  precision at k of cleanlab's label quality score (self-confidence).

AUROC: the probability that a flipped example scores as more suspicious than a clean one.
P@k: the fraction of flipped examples among the k most suspicious, k = number flipped.

    python benchmarks/label_noise_detection.py [--epochs 60] [--seeds 3]
        [--noise 0.1,0.2,0.4] [--optimizer adam|sgd] [--no-cleanlab]

The comparison needs cleanlab (``pip install 'learnscope[compare]'``); without it the
confident-learning rows are skipped with a message. About 2.5 minutes on one CPU thread
(2-core machine shared with other work).

Measured (cleanlab 2.9.0, torch 2.13 CPU; mean over 3 seeds, AUROC / P@k at 10%, 20%, 40%):
fit_weighted_aum 0.918/0.638, 0.900/0.676, 0.845/0.702; cleanlab quality score
0.903/0.597, 0.879/0.643, 0.812/0.667 (find_label_issues P@k 0.588, 0.634, 0.653); the old
combined default 0.865/0.413, 0.841/0.513, 0.771/0.624. With SGD (momentum 0.9) the default
gets 0.923/0.658, 0.907/0.688, 0.855/0.713; with 150 epochs instead of 60 it is unchanged
(the network fits every label by epoch 60, after which the epochs weigh 0), while plain AUM
falls from 0.890 to 0.854 AUROC at 10%. cleanlab's other quality scores (normalized_margin,
confidence_weighted_entropy), other filters and MLP L2 penalties 1e-4..1e-1 did no better
than self-confidence on seed 0.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from learnscope import Scope
from learnscope.data import mnist1d
from learnscope.data.corruptions import flip_labels
from learnscope.measures.per_example import detection_auroc, rank_suspicious
from learnscope.models import mlp
from learnscope.probes.per_example import PerExampleProbe
from learnscope.seeding import derive_seed, torch_generator

N_TRAIN = 4000
N_CLASSES = 10

# row label -> (method, combined weights)
LEARNSCOPE_ROWS = {
    "learnscope fit_weighted_aum (default)": ("fit_weighted_aum", (1.0, 1.0, 1.0)),
    "learnscope aum": ("aum", (1.0, 1.0, 1.0)),
    "learnscope confidence": ("confidence", (1.0, 1.0, 1.0)),
    "learnscope combined (old default)": ("combined", (1.0, 1.0, 1.0)),
    "learnscope lateness alone": ("combined", (0.0, 1.0, 0.0)),
    "learnscope forgetting alone": ("combined", (0.0, 0.0, 1.0)),
}
CL_QUALITY = "cleanlab quality score (self_confidence)"
CL_ISSUES = "cleanlab find_label_issues"


@dataclass
class Cell:
    """AUROC and precision at k of one method at one noise level, one value per seed."""

    auroc: list[float] = field(default_factory=list)
    p_at_k: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def precision_at_k(scores: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of flipped examples among the k highest scores, k = number flipped."""
    k = int(noisy.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    return float(noisy[top].mean())


def train_with_probe(x: torch.Tensor, y: torch.Tensor, noisy: torch.Tensor, *, seed: int,
                     epochs: int, optimizer: str) -> tuple[PerExampleProbe, list, nn.Module, float]:
    """Train the MLP on (x, y) with PerExampleProbe attached: probe, records, model, seconds."""
    start = time.perf_counter()
    net = mlp([x.shape[1], 256, 256, N_CLASSES], seed=seed)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    probe = PerExampleProbe(x, y, noisy_mask=noisy, top_k=int(noisy.sum()))
    scope = Scope(net, [probe], out=None)
    order = torch_generator(seed, "label-noise-batches")
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(100):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            scope.step(loss)
        scope.epoch()
    scope.close()
    return probe, scope.records, net, time.perf_counter() - start


def confident_learning(x: np.ndarray, y: np.ndarray, noisy: np.ndarray, *, seed: int
                       ) -> dict[str, tuple[float, float, str]]:
    """cleanlab on 5-fold out-of-fold probabilities of an sklearn MLP: row -> (auroc, p@k, note)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neural_network import MLPClassifier

    sk_seed = derive_seed(seed, "label-noise-sklearn") % 2**31
    clf = MLPClassifier(hidden_layer_sizes=(256, 256), early_stopping=True, max_iter=200,
                        random_state=sk_seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=sk_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    issues = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    k = int(noisy.sum())
    hits = noisy[issues]
    note = (f"flagged {len(issues)}, precision {hits.mean():.3f}, recall {hits.sum() / k:.3f}, "
            f"out-of-fold accuracy on the given labels {(probs.argmax(1) == y).mean():.3f}")
    return {
        CL_QUALITY: (detection_auroc(-quality, noisy), precision_at_k(-quality, noisy), ""),
        CL_ISSUES: (float("nan"), float(hits[:k].sum() / k), note),
    }


def _mean_sd(values: list[float]) -> str:
    vals = [v for v in values if not np.isnan(v)]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.3f}±{sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noise", default="0.1,0.2,0.4", help="flipped fractions, comma-separated")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--no-cleanlab", action="store_true", help="skip confident learning")
    args = parser.parse_args()
    torch.set_num_threads(1)
    noise_levels = [float(v) for v in args.noise.split(",")]

    use_cleanlab = not args.no_cleanlab
    if use_cleanlab:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            use_cleanlab = False
            print("cleanlab is not installed: confident-learning rows skipped "
                  "(pip install 'learnscope[compare]' or pip install cleanlab)")

    data = mnist1d(5000, n_train=N_TRAIN)
    x = data.x_train.to(torch.float32)
    x_test = data.x_test.to(torch.float32)
    rows = list(LEARNSCOPE_ROWS) + ([CL_QUALITY, CL_ISSUES] if use_cleanlab else [])
    table: dict[str, dict[float, Cell]] = {r: {nz: Cell() for nz in noise_levels} for r in rows}
    print(f"MNIST-1D, {N_TRAIN} training examples; MLP 40-256-256-10, {args.optimizer}, "
          f"{args.epochs} epochs; {args.seeds} seeds")
    with threadpool_limits(1):
        for noise in noise_levels:
            for seed in range(args.seeds):
                y, noisy_t = flip_labels(data.y_train, noise, N_CLASSES, seed=seed)
                noisy = noisy_t.numpy()
                probe, records, net, secs = train_with_probe(x, y, noisy_t, seed=seed,
                                                        epochs=args.epochs,
                                                        optimizer=args.optimizer)
                hist = probe.history()
                for row, (method, weights) in LEARNSCOPE_ROWS.items():
                    r = rank_suspicious(hist.correct, hist.prob_true, margins=hist.margins,
                                        method=method, weights=weights)
                    table[row][noise].auroc.append(detection_auroc(r.scores, noisy))
                    table[row][noise].p_at_k.append(precision_at_k(r.scores, noisy))
                # The probe's own records are the default row (a check of the probe's wiring).
                rec = {r.key: r.value for r in records if r.key.startswith("suspicious_")
                       and r.key != "suspicious_example"}
                default = table["learnscope fit_weighted_aum (default)"][noise]
                assert abs(rec["suspicious_auroc"] - default.auroc[-1]) < 1e-9
                assert abs(rec["suspicious_precision_at_k"] - default.p_at_k[-1]) < 1e-9
                with torch.no_grad():
                    test_acc = float((net(x_test).argmax(1) == data.y_test).float().mean())
                line = (f"noise {noise:.0%} seed {seed}: train fit {hist.correct[-1].mean():.3f} "
                        f"(flipped fitted {hist.correct[-1][noisy].mean():.3f}), test accuracy "
                        f"{test_acc:.3f}, learnscope {secs:.0f} s")
                if use_cleanlab:
                    start = time.perf_counter()
                    cl = confident_learning(x.numpy(), y.numpy(), noisy, seed=seed)
                    for row, (auc, pk, note) in cl.items():
                        table[row][noise].auroc.append(auc)
                        table[row][noise].p_at_k.append(pk)
                        if note:
                            table[row][noise].notes.append(f"seed {seed}: {note}")
                    line += f", cleanlab {time.perf_counter() - start:.0f} s"
                print(line, flush=True)

    width = max(len(r) for r in rows)
    head = "".join(f" | {f'{nz:.0%} AUROC':>13} {f'{nz:.0%} P@k':>13}" for nz in noise_levels)
    print()
    print(f"{'method':<{width}}{head}")
    print("-" * (width + len(head)))
    for row in rows:
        cells = "".join(f" | {_mean_sd(table[row][nz].auroc):>13} "
                        f"{_mean_sd(table[row][nz].p_at_k):>13}" for nz in noise_levels)
        print(f"{row:<{width}}{cells}")
    print(f"(mean±sd over {args.seeds} seeds; P@k with k = number of flipped labels)")
    if use_cleanlab:
        print()
        for nz in noise_levels:
            for note in table[CL_ISSUES][nz].notes:
                print(f"find_label_issues, noise {nz:.0%}, {note}")
        best = "learnscope fit_weighted_aum (default)"
        gaps_auc = [statistics.fmean(table[best][nz].auroc)
                    - statistics.fmean(table[CL_QUALITY][nz].auroc) for nz in noise_levels]
        gaps_pk = [statistics.fmean(table[best][nz].p_at_k)
                   - max(statistics.fmean(table[CL_QUALITY][nz].p_at_k),
                         statistics.fmean(table[CL_ISSUES][nz].p_at_k)) for nz in noise_levels]
        print(f"default_minus_cleanlab: auroc {min(gaps_auc):+.3f} (worst noise level), "
              f"p_at_k {min(gaps_pk):+.3f} (worst noise level, against cleanlab's better row)")


if __name__ == "__main__":
    main()
