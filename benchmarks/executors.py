"""The same 16 small trials through the in-process, process-pool and Ray executors.

Usage: python benchmarks/executors.py [--epochs 60] [--hidden 64] [--seeds 8] [--batched]
                                      [--workers N] [--skip-ray] [--repeats 1]

``run_study("random-labels", ...)`` with overrides that make 16 trials of similar cost: 8 seeds x
{clean labels, 100% random labels}, no random-pixel conditions, MLP 64-h-h-10 on the digits,
``--epochs`` epochs each (``max_epochs``; the study stops a trial at 100% training accuracy: at
the default 60 epochs none gets there, with more the clean-label ones may; the number that
stopped early is printed). By default each trial is its own group (``batched=False``, 16 groups:
16 separate ``train_classifier`` runs); ``--batched`` keeps the study's grouping (the two label
conditions of a seed trained as one batch of models: 8 groups of 2).

Each executor runs the study into its own temporary ``out`` folder (no HTML report):
``local`` (in this process, one thread), ``process`` (a spawned pool of ``--workers`` processes,
default one per core, one thread each) and ``ray`` (a fresh local Ray instance started by the
executor, one CPU per task). Ray's fixed start-up cost is measured on its own first:
``ray.init()`` + one trivial task, then ``ray.shutdown()``. The stored trials of the three runs
are compared record by record (they must be identical: only the driver writes the store).

The fixed cost of a process pool (spawning the workers, which import torch and learnscope) is
measured on its own too. Times are the wall time of the whole ``run_study`` call (trials +
analysis), best of ``--repeats``; the machine may be shared. The last line is
``process_pool_speedup=<local wall / process wall>``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

from learnscope.config import build_config, config_to_dict
from learnscope.exec import available_cores
from learnscope.runner import run_study
from learnscope.store import RunStore
from learnscope.studies import get_study

STUDY = "random-labels"


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"seeds": args.seeds, "noise_levels": "0,1", "gaussian_pixels": False,
                         "max_epochs": args.epochs, "hidden": args.hidden}
    fields = get_study(STUDY).Config.__dataclass_fields__
    if "batched" in fields:
        o["batched"] = bool(args.batched)
    elif args.batched:
        raise SystemExit(f"--batched: study {STUDY} has no 'batched' option")
    return o


def canonical(out: str, run_id: str) -> list[tuple[Any, ...]]:
    """The stored trials of a run as sorted plain tuples (NaN-safe: floats by repr)."""
    with RunStore(out) as store:
        trials = store.load_trials(run_id)
    rows = []
    for t in trials:
        recs = sorted((r.key, r.step, r.probe, repr(float(r.value)),
                       json.dumps(r.meta, sort_keys=True)) for r in t.records)
        rows.append((t.key, json.dumps(t.spec, sort_keys=True), t.status,
                     json.dumps(t.info, sort_keys=True), tuple(recs)))
    return sorted(rows)


def differences(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> str:
    if a == b:
        return "identical"
    if [r[:4] for r in a] != [r[:4] for r in b]:
        return "DIFFERENT trials (keys, specs, statuses or info)"
    n_diff, worst = 0, 0.0
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra[4], rb[4], strict=False):
            if x != y:
                n_diff += 1
                try:
                    worst = max(worst, abs(float(x[3]) - float(y[3])))
                except ValueError:
                    worst = float("nan")
        n_diff += abs(len(ra[4]) - len(rb[4]))
    return f"DIFFERENT: {n_diff} records differ (max |difference| {worst:.3g})"


def ray_startup(cores: int) -> tuple[float, float, float]:
    """(ray.init s, first trivial task s, ray.shutdown s) of a fresh local Ray."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    t1 = time.perf_counter()

    @ray.remote(num_cpus=1)
    def noop() -> int:
        return 1

    ray.get(noop.remote())
    t2 = time.perf_counter()
    ray.shutdown()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def process_startup(workers: int, config: dict[str, Any]) -> float:
    """Seconds for a spawned pool of ``workers`` (as ProcessExecutor makes it) to start and
    each run an empty trial group (imports of torch and learnscope included)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from learnscope.exec.worker import init_worker, run_group

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=init_worker,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in [pool.submit(run_group, STUDY, config, []) for _ in range(workers)]:
            fut.result()
        wall = time.perf_counter() - t0
    return wall


def foreign_ray(wait_s: float) -> list[str]:
    """GCS addresses of Ray instances already running on this machine, after waiting up to
    ``wait_s`` for them to go. ``RayExecutor`` first tries ``ray.init(address="auto")``, which
    joins *any* local Ray (found with ``ps``), e.g. the temporary one of a concurrent test run:
    if that one shuts down mid-run, Ray aborts this whole process after 60 s."""
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:  # private API moved: cannot tell
        return []
    deadline = time.perf_counter() + wait_s
    while True:
        addresses = sorted(find_gcs_addresses())
        if not addresses or time.perf_counter() >= deadline:
            return addresses
        time.sleep(2)


def timed_run(executor: str, workers: int | None, ov: dict[str, Any]
              ) -> tuple[float, float, float, list[tuple[Any, ...]]]:
    """(run_study wall s, its trials_s, the sum of the groups' own wall times as measured
    where they ran, canonical records), into a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{executor}-") as out:
        t0 = time.perf_counter()
        outcome = run_study(STUDY, overrides=ov, out=out, executor=executor, workers=workers,
                            write_report=False)
        wall = time.perf_counter() - t0
        timings = outcome.result["timings"]
        return (wall, timings["trials_s"], timings["trial_compute_s"],
                canonical(out, outcome.run.run_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=8, help="2 trials per seed")
    parser.add_argument("--batched", action="store_true",
                        help="keep the study's batched grouping (one group per seed)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--ray-wait", type=float, default=300,
                        help="seconds to wait for another process's Ray to go before the ray run")
    args = parser.parse_args()

    cores = available_cores()
    workers = args.workers or cores
    ov = overrides(args)
    study = get_study(STUDY)
    cfg = build_config(study.Config, ov)
    specs = study.trials(cfg)
    groups = study.group_trials(cfg, specs)
    print(f"{cores} cores; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          "(the machine may be shared with other jobs)")
    print(f"study {STUDY}, overrides {ov}: {len(specs)} trials in {len(groups)} groups "
          f"(sizes {sorted({len(g) for g in groups})})")

    ray_ok = not args.skip_ray
    if ray_ok:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed: skipping the ray executor")
            ray_ok = False
    if ray_ok and foreign_ray(args.ray_wait):
        print("warning: another Ray instance is running here; ray.init() below may join it")
    startup = ray_startup(cores) if ray_ok else None
    pool_startup = process_startup(workers, config_to_dict(cfg))

    names = ["local", "process"] + (["ray"] if ray_ok else [])
    best = {n: (float("inf"), float("inf"), float("inf")) for n in names}
    records: dict[str, list[tuple[Any, ...]]] = {}
    for _ in range(args.repeats):
        for name in names:
            if name == "ray":
                others = foreign_ray(args.ray_wait)
                if others:
                    print(f"warning: another Ray instance is running here ({', '.join(others)}); "
                          "the ray executor joins it instead of starting a fresh one")
            wall, trials_s, compute_s, recs = timed_run(
                name, None if name == "local" else workers, ov)
            if wall < best[name][0]:
                best[name] = (wall, trials_s, compute_s)
            records.setdefault(name, recs)
            if recs != records[name]:
                print(f"warning: {name} gave different records on a repeat")

    local = best["local"][0]
    print(f"\n{'executor':<10}{'workers':>8}{'wall s':>9}{'trials s':>10}{'compute s':>11}"
          f"{'speedup vs local':>18}")
    for name in names:
        wall, trials_s, compute_s = best[name]
        w = 1 if name == "local" else workers
        print(f"{name:<10}{w:>8}{wall:>9.2f}{trials_s:>10.2f}{compute_s:>11.2f}"
              f"{local / wall:>18.2f}")
    print("wall s: the whole run_study call; trials s: its trial phase; compute s: the sum of "
          "the trial groups' own wall times, measured where they ran")
    print(f"process pool fixed cost (measured separately): spawning {workers} workers, each "
          f"importing torch + learnscope and running an empty trial group: {pool_startup:.2f} s")
    if startup is not None:
        init_s, task_s, down_s = startup
        print(f"ray fixed cost (fresh local instance, measured separately): ray.init "
              f"{init_s:.2f} s + first trivial task {task_s:.2f} s = {init_s + task_s:.2f} s; "
              f"ray.shutdown {down_s:.2f} s")
    early = sum(1 for row in records["local"]
                if sum(1 for r in row[4] if r[0] == "train_acc") < args.epochs)
    print(f"trials that stopped before {args.epochs} epochs (100% training accuracy): {early}")
    for name in names[1:]:
        print(f"records {name} vs local: {differences(records['local'], records[name])} "
              f"({len(records[name])} trials, "
              f"{sum(len(r[4]) for r in records[name])} records)")
    print(f"process_pool_speedup={local / best['process'][0]:.2f}")


if __name__ == "__main__":
    main()
