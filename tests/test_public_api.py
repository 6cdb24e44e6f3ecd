"""The public names import from where the README says, and importing them is lazy: the command
line starts without torch."""

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import time

import pytest

PROBES = ["CurvatureProbe", "GradientNoiseProbe", "GradientStatsProbe", "InformationPlaneProbe",
          "LayerSimilarityProbe", "LinearPathProbe", "LinearRegionsProbe", "LossSliceProbe",
          "NTKProbe", "PerExampleProbe", "SimplicityProbe", "SuperpositionProbe",
          "WeightSpectrumProbe"]
PROBES_PACKAGE = PROBES + ["LayerProbe", "Probe", "ProbeContext", "ProbeSession", "Schedule",
                           "TensorBoardExporter", "at_end", "at_steps", "default_layers",
                           "default_probes", "every", "interpolation_between", "log_spaced",
                           "per_epoch"]
MEASURES = ["linear_cka", "cka_matrix", "minibatch_cka", "MinibatchCKA", "svcca",
            "information_plane_binning", "information_plane_kde", "simplicity_measures",
            "weight_spectrum", "marchenko_pastur_fit", "power_law_alpha", "stable_rank",
            "effective_rank", "layer_gradient_norms", "parameter_update_norms",
            "per_example_gradients", "gradient_noise", "tensor_norms", "top_hessian_eigenvalue",
            "hessian_trace", "linear_path", "loss_slice_1d", "PerExampleTracker",
            "empirical_ntk", "ntk_summary", "count_linear_regions", "superposition_summary"]
TOP = ["ConfigError", "LearnscopeError", "Record", "RunOutcome", "RunStore", "Scope",
       "StoreError", "get_study", "rebuild_report", "run_study", "study_names", "__version__"]


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip()


@pytest.mark.parametrize("name", PROBES_PACKAGE)
def test_probes_package_names(name):
    module = importlib.import_module("learnscope.probes")
    assert getattr(module, name) is not None
    exec(f"from learnscope.probes import {name}", {})


@pytest.mark.parametrize("name", MEASURES)
def test_measures_package_names(name):
    exec(f"from learnscope.measures import {name}", {})


@pytest.mark.parametrize("name", TOP)
def test_top_level_names(name):
    exec(f"from learnscope import {name}", {})


def test_top_level_scope_is_the_scope_module_class():
    import learnscope
    from learnscope.scope import Scope

    assert learnscope.Scope is Scope
    assert set(learnscope.__all__) >= set(TOP) | {"load"}
    with pytest.raises(AttributeError):
        learnscope.NoSuchThing  # noqa: B018


def _public_modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
            if not m.name.startswith("_")]


def test_every_probe_class_and_measure_is_exported():
    import learnscope.measures
    import learnscope.probes
    from learnscope.probes.base import Probe

    for dotted in _public_modules("learnscope.probes"):
        module = importlib.import_module(dotted)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Probe) and obj.__module__ == dotted \
                    and not name.startswith("_"):
                assert getattr(learnscope.probes, name) is obj, name
    assert set(PROBES) <= set(learnscope.probes.__all__)
    for dotted in _public_modules("learnscope.measures"):
        module = importlib.import_module(dotted)
        for name in module.__all__:
            assert getattr(learnscope.measures, name) is getattr(module, name), name
    assert set(MEASURES) <= set(learnscope.measures.__all__)
    assert set(MEASURES) <= set(dir(learnscope.measures))


def test_star_import_uses_the_lazy_all():
    namespace: dict = {}
    exec("from learnscope.probes import *", namespace)
    assert set(PROBES) <= set(namespace) and "Scope" not in namespace


def test_imports_are_lazy():
    out = _run("import sys, learnscope, learnscope.cli, learnscope.studies, learnscope.probes; "
               "learnscope.studies.study_infos(); "
               "print(sorted(m for m in ('torch', 'numpy', 'learnscope.runner', "
               "'learnscope.probes.curvature', 'learnscope.studies.double_descent', "
               "'learnscope.studies.base') if m in sys.modules))")
    assert out == "[]"
    out = _run("import sys; from learnscope.probes import every; "
               "from learnscope.measures import linear_cka; "
               "print(sorted(m for m in ('learnscope.probes.curvature', "
               "'learnscope.measures.curvature') if m in sys.modules))")
    assert out == "[]"  # a name imports its own module only


def test_a_name_wins_over_its_module_of_the_same_name():
    from learnscope.measures import svcca
    from learnscope.measures.svcca import SVCCAResult

    assert callable(svcca) and not isinstance(svcca, type(sys))
    assert SVCCAResult.__module__ == "learnscope.measures.svcca"


def test_help_is_fast():
    env = os.environ | {"COLUMNS": "120"}
    cmd = [sys.executable, "-m", "learnscope.cli", "--help"]
    subprocess.run(cmd, capture_output=True, check=True, env=env)  # warm the file cache
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    seconds = time.perf_counter() - t0
    assert "list" in proc.stdout and "run" in proc.stdout
    assert seconds < 2.0, f"learnscope --help took {seconds:.2f} s"  # ~0.2 s unloaded
