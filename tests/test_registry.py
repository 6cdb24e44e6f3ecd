"""The study registry: built-in modules found by pkgutil and read with ast (nothing imported
to list), third-party studies through entry points, clear errors for modules that fail."""

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import learnscope.studies as studies
from learnscope.cli import main
from learnscope.errors import LearnscopeError
from learnscope.studies import get_study, register, study_infos, study_names

BUILTIN = {"double-descent", "random-labels"}

PLUGIN = '''
from learnscope.studies import get_study

_Base = type(get_study("random-labels"))


class ToyStudy(_Base):
    name = "toy-study"
    title = "A toy study"
    summary = "Only for the registry test."
    source = "nobody 2024"


class Misnamed(_Base):
    name = "not-what-the-entry-point-says"


NOT_A_STUDY = 3
'''


def _entry_points(monkeypatch, **points):
    eps = [importlib.metadata.EntryPoint(name, value, studies.ENTRY_POINT_GROUP)
           for name, value in points.items()]

    def fake(**kwargs):
        return [e for e in eps if e.group == kwargs.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(studies, "_REGISTRY", dict(studies._REGISTRY))
    yield
    for m in ("toy_plugin", "broken_plugin"):
        sys.modules.pop(m, None)


@pytest.fixture
def extra_modules(tmp_path, monkeypatch):
    """Study modules beside the built-in ones (as if shipped in learnscope.studies)."""
    folder = tmp_path / "more_studies"
    folder.mkdir()
    files = {
        "zz_broken.py": '''
            import does_not_exist_anywhere

            from learnscope.studies import register


            @register
            class Broken:
                name = "broken-study"
                title = "Broken"
                summary = "Its module fails to import."
            ''',
        "zz_syntax.py": "class (:\n",
        "_private.py": '''
            from learnscope.studies import register


            @register
            class Hidden:
                name = "hidden-study"
            ''',
        "zz_helpers.py": '''
            class NotRegistered:
                name = "helper"
            ''',
    }
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    monkeypatch.setattr(studies, "__path__", [*studies.__path__, str(folder)])
    monkeypatch.setattr(studies, "_REGISTRY", dict(studies._REGISTRY))
    yield
    for m in list(sys.modules):
        if m.startswith("learnscope.studies.zz_"):
            del sys.modules[m]


def test_builtin_infos_match_the_classes():
    infos = {i.name: i for i in study_infos()}
    assert set(infos) >= BUILTIN
    modules = [i.module for i in infos.values()]
    assert modules == sorted(modules)  # built-in studies in module order
    for name in BUILTIN:
        info, study = infos[name], get_study(name)
        assert (info.title, info.summary, info.source) == (study.title, study.summary,
                                                           study.source)
        assert info.module == type(study).__module__ and info.class_name == type(study).__name__
        assert info.origin == "builtin"


def test_listing_imports_no_study_and_get_study_imports_one():
    code = ("import sys; from learnscope.studies import study_infos, get_study; "
            "study_infos(); a = [m for m in sys.modules if m.startswith('learnscope.studies.')]; "
            "get_study('random-labels'); "
            "print(a, 'learnscope.studies.double_descent' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] False"


def test_unknown_study_names_the_known_ones():
    with pytest.raises(LearnscopeError, match="unknown study 'nope'; known studies: ") as e:
        get_study("nope")
    assert str(e.value).endswith(", ".join(study_names()))
    assert BUILTIN <= set(str(e.value).split(": ")[1].split(", "))


def test_entry_point_is_listed_without_import_and_loaded_on_demand(plugin, monkeypatch):
    _entry_points(monkeypatch, **{"toy-study": "toy_plugin:ToyStudy"})
    (toy,) = [i for i in study_infos() if i.origin == "entry point"]
    assert (toy.name, toy.title, toy.summary, toy.module, toy.class_name) == (
        "toy-study", "A toy study", "Only for the registry test.", "toy_plugin", "ToyStudy")
    assert "toy_plugin" not in sys.modules
    study = get_study("toy-study")
    assert type(study).__name__ == "ToyStudy" and "toy_plugin" in sys.modules
    assert get_study("toy-study").title == "A toy study"
    assert study_names()[-1] == "toy-study"


@pytest.mark.filterwarnings("ignore:entry point random-labels")
def test_entry_point_errors_are_clear(plugin, monkeypatch):
    _entry_points(monkeypatch, **{"misnamed": "toy_plugin:Misnamed",
                                  "number": "toy_plugin:NOT_A_STUDY",
                                  "gpu-study": "broken_plugin:Study",
                                  "random-labels": "toy_plugin:ToyStudy"})
    with pytest.warns(UserWarning, match="'random-labels' exists already"):
        infos = {i.name: i for i in study_infos()}
    assert infos["random-labels"].origin == "builtin"
    assert infos["gpu-study"].summary == "(entry point broken_plugin:Study)"  # name only
    with pytest.raises(LearnscopeError, match="defines a study named "
                                              "'not-what-the-entry-point-says'"):
        get_study("misnamed")
    with pytest.raises(LearnscopeError, match="is not a learnscope Study class"):
        get_study("number")
    with pytest.raises(LearnscopeError, match=r"entry point gpu-study = 'broken_plugin:Study' "
                                              r"failed to load: ImportError: no GPU here"):
        get_study("gpu-study")


@pytest.mark.filterwarnings("ignore:studies module learnscope.studies.zz_syntax")
def test_module_that_fails_to_import_is_listed_and_named(extra_modules, capsys):
    with pytest.warns(UserWarning, match=r"learnscope\.studies\.zz_syntax could not be read"):
        names = study_names()
    assert "broken-study" in names
    assert "hidden-study" not in names and "helper" not in names  # _private, no @register
    with pytest.raises(LearnscopeError, match=r"study 'broken-study': module "
                                              r"learnscope\.studies\.zz_broken failed to "
                                              r"import: ModuleNotFoundError"):
        get_study("broken-study")
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "broken-study" in captured.out and "double-descent" in captured.out
    assert "learnscope: warning: studies module learnscope.studies.zz_syntax" in captured.err
    assert main(["show", "broken-study"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "learnscope.studies.zz_broken" in err


def test_register_directly(monkeypatch):
    monkeypatch.setattr(studies, "_REGISTRY", dict(studies._REGISTRY))
    base = type(get_study("random-labels"))
    mine = type("Mine", (base,), {"name": "my-study", "title": "Mine", "summary": "s",
                                  "source": "me"})
    assert register(mine) is mine and register(mine) is mine  # idempotent for one class
    assert get_study("my-study").title == "Mine"
    assert [i.origin for i in study_infos() if i.name == "my-study"] == ["registered"]
    with pytest.raises(ValueError, match="registered twice"):
        register(type("Other", (base,), {"name": "my-study"}))
