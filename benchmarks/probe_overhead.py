"""Wall-time overhead of learnscope probes on a plain PyTorch training loop.

Trains an MNIST-1D MLP (40-256-256-10, SGD momentum, batch 100; 100 epochs = 4000 steps by
default, the MNIST-1D notebook trains 6000) without probes and with each
probe (at its default schedule), and with the default probe set, all in one run; prints the
ratio probed / plain for each. Records go to a real run store (SQLite) as in normal use; the
HTML report, written once at the end, is timed separately. Runs are interleaved and repeated,
and the median is reported.

    python benchmarks/probe_overhead.py [--epochs 100] [--repeats 3]

The last line is the headline figure, e.g. ``default_probe_overhead=1.07``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn

from learnscope.data import mnist1d
from learnscope.models import mlp
from learnscope.probes import Scope, default_probes
from learnscope.seeding import torch_generator


def candidate_probes(x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, object]:
    from learnscope.probes.curvature import CurvatureProbe
    from learnscope.probes.gradients import GradientNoiseProbe, GradientStatsProbe
    from learnscope.probes.information import InformationPlaneProbe
    from learnscope.probes.landscape import LinearPathProbe, LossSliceProbe
    from learnscope.probes.linear_regions import LinearRegionsProbe
    from learnscope.probes.ntk import NTKProbe
    from learnscope.probes.per_example import PerExampleProbe
    from learnscope.probes.similarity import LayerSimilarityProbe
    from learnscope.probes.simplicity import SimplicityProbe
    from learnscope.probes.spectra import WeightSpectrumProbe
    from learnscope.probes.superposition import SuperpositionProbe

    ce = nn.functional.cross_entropy
    return {
        "GradientStatsProbe": lambda: GradientStatsProbe(),
        "WeightSpectrumProbe": lambda: WeightSpectrumProbe(),
        "LayerSimilarityProbe": lambda: LayerSimilarityProbe(),
        "InformationPlaneProbe": lambda: InformationPlaneProbe(),
        "LinearRegionsProbe": lambda: LinearRegionsProbe(),
        "SimplicityProbe": lambda: SimplicityProbe(fit_on=(x_train[:1000], y_train[:1000])),
        "PerExampleProbe": lambda: PerExampleProbe(x_train, y_train),
        "SuperpositionProbe": lambda: SuperpositionProbe("0.weight", features_axis=1),
        "GradientNoiseProbe": lambda: GradientNoiseProbe(ce),
        "CurvatureProbe": lambda: CurvatureProbe(ce),
        "NTKProbe": lambda: NTKProbe(),
        "LinearPathProbe": lambda: LinearPathProbe(),
        "LossSliceProbe": lambda: LossSliceProbe(),
    }


def train(data, probes, epochs: int, out_dir: str | None) -> tuple[float, float, Scope | None]:
    model = mlp([40, 256, 256, 10], seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch_generator(0, "bench-order")
    x, y = data.x_train, data.y_train
    t0 = time.perf_counter()
    scope = None
    if probes is not None:
        scope = Scope(model, probes, data=(data.x_test[:512], data.y_test[:512]), out=out_dir,
                      name="bench", report=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if scope is not None:
                scope.step(loss)
        if scope is not None:
            scope.epoch()
    if scope is not None:
        scope.close()
    wall = time.perf_counter() - t0
    report_s = 0.0
    if scope is not None and out_dir is not None:
        from learnscope.report.probe_report import write_probe_report

        t1 = time.perf_counter()
        write_probe_report(scope.run_dir / "report.html",
                           {"study": "bench", "config": scope.config(), "timings": scope.timings},
                           scope.records)
        report_s = time.perf_counter() - t1
    return wall, report_s, scope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist1d(5000)
    configs = {"plain": lambda: None, "default set": default_probes}
    configs |= {name: (lambda f=f: [f()])
                for name, f in candidate_probes(data.x_train, data.y_train).items()}
    times: dict[str, list[float]] = {k: [] for k in configs}
    info: dict[str, tuple[str, str, float]] = {}
    steps = args.epochs * len(data.x_train) // 100
    print(f"MNIST-1D MLP 40-256-256-10, batch 100, {args.epochs} epochs = {steps} steps, "
          f"{args.threads} thread(s), probe data 512 examples, median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        train(data, None, 1, None)  # warm-up
        for _ in range(args.repeats):
            for name, make in configs.items():
                probes = make()
                wall, report_s, scope = train(data, probes, args.epochs,
                                              None if probes is None else tmp)
                times[name].append(wall)
                if scope is not None:
                    sched = "; ".join(sorted({str(p.schedule) for p in scope.probes}))
                    cost = "/".join(sorted({p.cost for p in scope.probes}))
                    info[name] = (cost, sched, report_s)
    plain = statistics.median(times["plain"])
    print(f"{'configuration':24s} {'cost':18s} {'schedule':40s} {'seconds':>8s} {'ratio':>6s}")
    print(f"{'plain (no probes)':24s} {'':18s} {'':40s} {plain:8.2f} {1.0:6.2f}")
    ratios = {}
    for name in configs:
        if name == "plain":
            continue
        med = statistics.median(times[name])
        ratios[name] = med / plain
        cost, sched, _ = info[name]
        print(f"{name:24s} {cost:18s} {sched[:40]:40s} {med:8.2f} {ratios[name]:6.2f}")
    print(f"(writing the HTML report once at the end: {info['default set'][2]:.2f} s, not "
          "included above)")
    print(f"default_probe_overhead={ratios['default set']:.2f}")


if __name__ == "__main__":
    main()
