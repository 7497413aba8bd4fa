"""Plug-ins: ``--import=MODULE`` on every command line and the ``sparsegnn_jax.plugins``
entry points of installed packages. A module's registrations take effect before the flags are
checked; a module or plug-in that fails is one ``error:`` line naming it."""
from __future__ import annotations

import sys
import textwrap

import pytest

from sparsegnn_jax import cli, plugins, report, sweep_cli
from sparsegnn_jax.sparsity import registry

# A module of a user's: registers a method (a static mask under another name).
METHOD_MODULE = """
import sparsegnn_jax as sg

def plugged(inner, sparsity=0.9, distribution="uniform", filter_fn=None, key=None):
    return sg.static_sparse(inner, sparsity=sparsity, distribution=distribution,
                            filter_fn=filter_fn, key=key)

sg.registry.register(sg.registry.MethodSpec("{name}", plugged, "Plugged", needs_key=True))
"""

MAINS = {
    "link": lambda argv: cli.main("link", argv),
    "node": lambda argv: cli.main("node", argv),
    "sweep": sweep_cli.main,
    "report": report.main,
}


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """No plug-in loaded yet, and the modules a test writes and the methods they register are
    gone after it."""
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_FILE_MODULES", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    methods = set(registry.names())
    monkeypatch.delenv(plugins.DISABLE_VARIABLE, raising=False)
    yield
    for name in set(registry.names()) - methods:
        registry.unregister(name)
    # Only the test's own modules: a library module imported meanwhile must stay the one
    # object every later import gets.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def write(folder, name, code):
    path = folder / name
    path.write_text(textwrap.dedent(code))
    return path


def test_a_module_by_name_from_the_current_folder_and_by_path_is_imported_once(
        tmp_path, monkeypatch, fresh):
    write(tmp_path, "plug_by_name.py", METHOD_MODULE.format(name="plug_by_name"))
    path = write(tmp_path, "plug_by_path.py", METHOD_MODULE.format(name="plug_by_path"))
    monkeypatch.chdir(tmp_path)
    # The current folder is not on the path of `python experiments/x.py`.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    [by_name, by_path] = plugins.import_modules(["plug_by_name", str(path)])
    assert by_name.__name__ == "plug_by_name" and by_path.__name__ == "plug_by_path"
    assert {"plug_by_name", "plug_by_path"} <= set(registry.names())
    # Again (another command line in the same process): nothing runs twice, so register
    # does not refuse the taken names; a relative path is the same file.
    assert plugins.import_module("plug_by_name") is by_name
    assert plugins.import_module("plug_by_path.py") is by_path
    assert sys.modules["plug_by_path"] is by_path


@pytest.mark.parametrize("spec, code, message", [
    ("no_such_module_xyz", None,
     "--import=no_such_module_xyz: no module named 'no_such_module_xyz' (give an importable "
     "module name or the path of a .py file)"),
    ("{tmp}/missing.py", None, "--import={tmp}/missing.py: no such file"),
    ("{tmp}/data.txt", "1 2\n", "--import={tmp}/data.txt: a path must name a .py file"),
    ("{tmp}/raises.py", "import math\n\nx = 1 / 0\n",
     "--import={tmp}/raises.py failed: ZeroDivisionError: division by zero (raises.py, line 3)"),
    ("{tmp}/needs_dep.py", "import not_installed_dep_xyz\n",
     "--import={tmp}/needs_dep.py failed: ModuleNotFoundError: No module named "
     "'not_installed_dep_xyz' (needs_dep.py, line 1)"),
    ("{tmp}/syntax.py", "def f(:\n",
     "--import={tmp}/syntax.py failed: SyntaxError: invalid syntax (syntax.py, line 1)"),
    ("{tmp}/taken.py", METHOD_MODULE.format(name="rigl"),
     "--import={tmp}/taken.py failed: ValueError: sparsity method 'rigl' is already "
     "registered (taken.py, line 8)"),
    ("raises_by_name", "x = {}['key']\n",
     "--import=raises_by_name failed: KeyError: 'key' (raises_by_name.py, line 1)"),
])
def test_a_module_that_fails_is_one_line_naming_it(spec, code, message, tmp_path, monkeypatch,
                                                   fresh):
    monkeypatch.chdir(tmp_path)
    name = spec.format(tmp=tmp_path).rsplit("/", 1)[-1]
    if code is not None:
        write(tmp_path, name if "." in name else name + ".py", code)
    with pytest.raises(plugins.PluginError) as err:
        plugins.import_module(spec.format(tmp=tmp_path))
    assert str(err.value) == message.format(tmp=tmp_path)
    assert name.removesuffix(".py") not in sys.modules  # no half-imported module left


@pytest.mark.parametrize("script", sorted(MAINS))
def test_every_command_line_reports_a_failing_import_as_one_error_line(script, tmp_path, capsys,
                                                                       fresh, no_data_loading):
    bad = write(tmp_path, "bad_plugin.py", "raise RuntimeError('cannot start')\n")
    out = tmp_path / "out"
    argv = [f"--import={bad}", f"--out={out}", "--no-progress"][:2 if script == "report" else 3]
    assert MAINS[script](argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: --import={bad} failed: RuntimeError: cannot start "
                            "(bad_plugin.py, line 1)\n")
    assert not out.exists()


def test_an_imported_method_is_a_valid_flag_value_only_after_the_import(tmp_path, capsys, fresh,
                                                                        no_data_loading):
    mod = write(tmp_path, "plug_cli.py", METHOD_MODULE.format(name="plug_cli"))
    common = ["--epochs=0", f"--out={tmp_path / 'out'}", "--no-progress"]
    with pytest.raises(SystemExit) as exit_:
        cli.main("node", ["--method=plug_cli", *common])
    assert exit_.value.code == 2 and "invalid choice: 'plug_cli'" in capsys.readouterr().err
    assert sweep_cli.main(["--methods=plug_cli", *common]) == 2
    assert "unknown method 'plug_cli' in --methods" in capsys.readouterr().err
    # With the import, the method name passes and the next check is the one that fails
    # (before any data is loaded).
    assert cli.main("node", [f"--import={mod}", "--method=plug_cli", *common]) == 2
    assert capsys.readouterr().err == "error: --epochs must be positive, got 0\n"
    assert sweep_cli.main([f"--import={mod}", "--methods=plug_cli", *common]) == 2
    assert capsys.readouterr().err == "error: --epochs must be positive, got 0\n"
    assert "plug_cli" in cli.build_parser("node").format_help()


# ---------------------------------------------------------------------------------------------
# Entry points of installed packages: a real .dist-info folder on the path.


def install(site, dist, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution ``dist`` 1.0 in ``site`` declaring ``entry_points`` in the group."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{plugins.ENTRY_POINT_GROUP}]\n"
        + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, code in modules.items():
        write(site, f"{name}.py", code)


@pytest.fixture
def site(tmp_path, monkeypatch, fresh):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


CALLED = """
CALLS = []

def register():
    import sparsegnn_jax as sg
    CALLS.append(1)
    {body}
"""


def test_installed_plugins_load_once_as_modules_or_functions(site, tmp_path, capsys,
                                                              no_data_loading):
    install(site, "someplug", {"ep_function": "ep_funcs:register", "ep_module": "ep_side"},
            {"ep_funcs": CALLED.format(body="sg.registry.register(sg.registry.MethodSpec("
                                            "'ep_method', sg.static_sparse, 'EP', "
                                            "needs_key=True))"),
             "ep_side": "IMPORTED = True\n"})
    assert plugins.load() == ["ep_function", "ep_module"]
    assert plugins.load() == ["ep_function", "ep_module"]
    assert sys.modules["ep_funcs"].CALLS == [1]  # the function ran once
    assert "ep_method" in registry.names() and sys.modules["ep_side"].IMPORTED
    # A command line loads them itself: the plug-in's method is a valid --method.
    plugins._LOADED.clear()
    registry.unregister("ep_method")
    assert cli.main("node", ["--method=ep_method", "--epochs=0", f"--out={tmp_path / 'o'}",
                             "--no-progress"]) == 2
    assert capsys.readouterr().err == "error: --epochs must be positive, got 0\n"


def test_a_failing_installed_plugin_names_itself_and_can_be_skipped(site, tmp_path, capsys,
                                                                   monkeypatch, no_data_loading):
    install(site, "brokenplug", {"broken": "broken_plug:register"},
            {"broken_plug": CALLED.format(body="raise ValueError('needs a GPU')")})
    with pytest.raises(plugins.PluginError) as err:
        plugins.load()
    message = ("plug-in 'broken' (broken_plug:register of brokenplug 1.0) failed to load: "
               "ValueError: needs a GPU (broken_plug.py, line 7); uninstall it or set "
               "SPARSEGNN_DISABLE_PLUGINS=1 to skip installed plug-ins")
    assert str(err.value) == message
    argv = ["--epochs=0", f"--out={tmp_path / 'o'}", "--no-progress"]
    assert sweep_cli.main(argv) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    monkeypatch.setenv(plugins.DISABLE_VARIABLE, "1")
    assert plugins.load() == []
    assert sweep_cli.main(argv) == 2
    assert capsys.readouterr().err == "error: --epochs must be positive, got 0\n"


def test_an_entry_point_that_is_neither_module_nor_function_is_refused(site):
    install(site, "oddplug", {"odd": "odd_plug:VALUE"}, {"odd_plug": "VALUE = 3\n"})
    with pytest.raises(plugins.PluginError, match=r"^plug-in 'odd' \(odd_plug:VALUE of oddplug "
                                                  r"1.0\) failed to load: TypeError: "
                                                  r"odd_plug:VALUE is neither a module nor a "
                                                  r"function;"):
        plugins.load()
