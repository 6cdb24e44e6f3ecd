"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(_python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    import learnscope.studies

    monkeypatch.chdir(tmp_path)
    # a study registered by an example must not stay registered for the other tests
    monkeypatch.setattr(learnscope.studies, "_REGISTRY", dict(learnscope.studies._REGISTRY))
    code = _python_blocks()[index]
    namespace: dict = {}
    exec(compile(code, f"README.md example {index}", "exec"), namespace)
    if "Scope(" in code:
        scope = namespace["scope"]
        assert (scope.run_dir / "report.html").is_file()
        assert {r.probe for r in scope.records} >= {"gradient_stats", "weight_spectrum",
                                                     "layer_similarity"}
