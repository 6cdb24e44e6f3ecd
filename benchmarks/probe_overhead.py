"""Wall-time overhead of learnscope probes on a plain PyTorch training loop.

Trains an MNIST-1D MLP (40-256-256-10, SGD momentum, batch 100; 100 epochs = 4000 steps by
default, the MNIST-1D notebook trains 6000) without probes and with each
probe (at its default schedule), and with the default probe set, all in one run; prints the
ratio probed / plain for each. Records go to a real run store (SQLite) as in normal use; the
HTML report, written once at the end, is timed separately. Each probed run is paired with a
plain run right before it and the median of the pair ratios is reported (the VM's speed drifts
by 10-20% between minutes); the ratio of the process's CPU time (less sensitive to other
processes on a shared machine) and the seconds the scope measured inside its probes are printed
too, and the wall seconds spent inside the scope's own calls (constructor, ``step``, ``epoch``,
``close``: probes plus bookkeeping and record storage), the other contention-free estimate.

The last row is what a user's script sees: each pair in a fresh Python process (so whatever
the Scope imports when it closes is paid, as in a real script), the Scope as a user writes it
(default probes, ``report=True``: the HTML report is written by ``close()`` and counted).

    python benchmarks/probe_overhead.py [--epochs 100] [--repeats 3] [--fresh 3]

The ratio depends on the run's length: the log-spaced measurements, the final ones and the
store's fixed costs are spread over more steps in a longer run (``--only "default set" --fresh 0
--epochs 1000``: 40000 steps, 1.04x for the default set against 1.08-1.17x at 4000 steps).

The last line is the headline figure, e.g. ``default_probe_overhead=1.07``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from learnscope import Scope
from learnscope.data import mnist1d
from learnscope.models import mlp
from learnscope.probes import default_probes
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


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _loop(model: nn.Module, opt: torch.optim.Optimizer, data, epochs: int, on_step=None,
          on_epoch=None) -> None:
    """The training loop every configuration runs: batch 100, a seeded order; ``on_step(loss)``
    after each optimizer step, ``on_epoch()`` after each epoch."""
    gen = torch_generator(0, "bench-order")
    x, y = data.x_train, data.y_train
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(loss)
        if on_epoch is not None:
            on_epoch()


def train(data, probes, epochs: int, out_dir: str | None
          ) -> tuple[float, float, Scope | None, float, float]:
    """Wall s, report s, the scope, CPU s, and wall s inside the scope's calls."""
    model = mlp([40, 256, 256, 10], seed=0)
    clock = time.perf_counter
    t0, c0 = clock(), time.process_time()
    if probes is None:
        _loop(model, _sgd(model), data, epochs)
        return clock() - t0, 0.0, None, time.process_time() - c0, 0.0
    in_calls = [0.0]

    def timed(call):
        def run(*args):
            t1 = clock()
            call(*args)
            in_calls[0] += clock() - t1
        return run

    scope = Scope(model, probes, data=(data.x_test[:512], data.y_test[:512]), out=out_dir,
                  name="bench", report=False)
    in_calls[0] += clock() - t0
    _loop(model, _sgd(model), data, epochs, timed(scope.step), timed(scope.epoch))
    timed(scope.close)()
    wall, cpu = clock() - t0, time.process_time() - c0
    report_s = 0.0
    if out_dir is not None:
        from learnscope.report.probe_report import write_probe_report

        t1 = clock()
        write_probe_report(scope.run_dir / "report.html",
                           {"study": "bench", "config": scope.config(), "timings": scope.timings},
                           scope.records)
        report_s = clock() - t1
    return wall, report_s, scope, cpu, in_calls[0]


def fresh_pair(epochs: int, threads: int) -> None:
    """One pair in this (fresh) process: plain, then the Scope as a user writes it (default
    probes, report written by close); prints the two wall times as JSON."""
    torch.set_num_threads(threads)
    data = mnist1d(5000)
    train(data, None, 1, None)  # warm-up, as the pairs in main() have
    plain, *_ = train(data, None, epochs, None)
    with tempfile.TemporaryDirectory() as tmp:
        model = mlp([40, 256, 256, 10], seed=0)
        opt = _sgd(model)
        t0 = time.perf_counter()
        with Scope(model, data=(data.x_test[:512], data.y_test[:512]), out=tmp,
                   name="bench", optimizer=opt) as scope:
            _loop(model, opt, data, epochs, scope.step, scope.epoch)
        probed = time.perf_counter() - t0
        assert (scope.run_dir / "report.html").exists()
    print(json.dumps({"plain": plain, "probed": probed}))


def fresh_pairs(n: int, epochs: int, threads: int) -> list[tuple[float, float]]:
    """``n`` pairs, each in a new Python process (see :func:`fresh_pair`)."""
    # Python as users run it: writing and reusing bytecode (some sandboxes and CI images set
    # PYTHONDONTWRITEBYTECODE, which makes every import compile its source again)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = []
    for _ in range(n):
        done = subprocess.run([sys.executable, __file__, "--fresh-child", "--epochs",
                               str(epochs), "--threads", str(threads)],
                              capture_output=True, text=True, check=True, env=env)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        out.append((row["plain"], row["probed"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="pairs per single probe")
    ap.add_argument("--default-repeats", type=int, default=5, help="pairs for the default set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="run only this configuration, e.g. 'default set'")
    ap.add_argument("--fresh", type=int, default=3,
                    help="pairs of the default set as a user runs it, each in a fresh process")
    ap.add_argument("--fresh-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fresh_child:
        fresh_pair(args.epochs, args.threads)
        return
    torch.set_num_threads(args.threads)
    data = mnist1d(5000)
    configs = {"default set": default_probes}
    configs |= {name: (lambda f=f: [f()])
                for name, f in candidate_probes(data.x_train, data.y_train).items()}
    if args.only:
        configs = {k: v for k, v in configs.items() if k == args.only}
    steps = args.epochs * len(data.x_train) // 100
    print(f"MNIST-1D MLP 40-256-256-10, batch 100, {args.epochs} epochs = {steps} steps, "
          f"{args.threads} thread(s), probe data 512 examples. Each configuration runs right "
          "after a plain run (a pair); ratio = median over pairs of probed/plain wall time. "
          "'in-scope s' is the time the scope itself measured in its probes and capture pass, "
          "a contention-free estimate of the added work.")
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        train(data, None, 1, None)  # warm-up
        for name, make in configs.items():
            ratios, walls, plains, inside, cpu_ratios, calls = [], [], [], [], [], []
            for _ in range(args.default_repeats if name == "default set" else args.repeats):
                plain, _, _, plain_cpu, _ = train(data, None, args.epochs, None)
                wall, report_s, scope, cpu, in_calls = train(data, make(), args.epochs, tmp)
                ratios.append(wall / plain)
                cpu_ratios.append(cpu / plain_cpu)
                walls.append(wall)
                plains.append(plain)
                inside.append(sum(scope.timings.values()))
                calls.append(in_calls)
            cost = "/".join(sorted({p.cost for p in scope.probes}))
            sched = "; ".join(sorted({str(p.schedule) for p in scope.probes}))
            p_med = statistics.median(plains)
            rows.append((name, cost, sched, p_med, statistics.median(walls),
                         statistics.median(ratios), statistics.median(inside),
                         1 + statistics.median(inside) / p_med, report_s,
                         statistics.median(cpu_ratios), statistics.median(calls)))
    print(f"{'configuration':22s} {'cost':16s} {'schedule':38s} {'plain s':>7s} "
          f"{'probed s':>8s} {'ratio':>6s} {'cpu ratio':>9s} {'in-scope s':>10s} "
          f"{'ratio (in-scope)':>16s} {'scope-call s':>12s} {'ratio (calls)':>13s}")
    for name, cost, sched, p, w, r, ins, r_in, _, r_cpu, c in rows:
        print(f"{name:22s} {cost:16s} {sched[:38]:38s} {p:7.2f} {w:8.2f} {r:6.2f} {r_cpu:9.2f} "
              f"{ins:10.2f} {r_in:16.2f} {c:12.2f} {1 + c / p:13.2f}")
    default = rows[0] if rows and rows[0][0] == "default set" else None
    if default is not None:
        print(f"(default set: writing the HTML report once at the end: {default[8]:.2f} s, not "
              "included above)")
    if args.fresh and (not args.only or args.only == "default set"):
        pairs = fresh_pairs(args.fresh, args.epochs, args.threads)
        ratio = statistics.median(p / q for q, p in pairs)
        print(f"{'default set, as a user':22s} fresh process each pair, report written by "
              f"close(): plain {statistics.median(q for q, _ in pairs):.2f} s, probed "
              f"{statistics.median(p for _, p in pairs):.2f} s, ratio {ratio:.2f} "
              f"(pairs: {', '.join(f'{p / q:.2f}' for q, p in pairs)})")
        print(f"user_visible_overhead={ratio:.2f}")
    print(f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    if default is not None:
        print(f"default_probe_overhead={default[5]:.2f}")


if __name__ == "__main__":
    main()
