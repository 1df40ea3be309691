"""foundation/registry.py: a registry finds its names in its package's source, one place per name."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import textwrap

import pytest

from foundation.registry import Registry, UnknownNameError, scan_registrations

# every registry of the project that finds its entries by scanning: (package, variable)
SCANNED = [("models", "NETWORKS"), ("losses", "LOSSES"), ("core", "TRAINERS"), ("data", "DATASETS")]


@pytest.mark.parametrize("package,variable", SCANNED)
def test_scan_finds_exactly_what_importing_the_package_registers(package, variable):
    """A name registered any other way than a literal decorator would be invisible to list_networks()."""
    pkg = importlib.import_module(package)
    registry = getattr(pkg, variable)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg:
            importlib.import_module(f"{package}.{info.name}")
    registered = {display: obj.__module__ for display, obj in registry._entries.values()
                  if obj.__module__.split(".")[0] == package}
    scanned = {name: module for name, module, _ in scan_registrations(package, variable)}
    assert registered == scanned
    assert set(scanned) <= set(registry.names())


def _write_package(root, name, files):
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from foundation.registry import Registry
        THINGS = Registry("thing", package=__name__, variable="THINGS")
    '''))
    for fname, text in files.items():
        (pkg / fname).write_text(textwrap.dedent(text))
    return pkg


@pytest.fixture
def temp_package(tmp_path, monkeypatch):
    """Write a throw-away package under tmp_path, importable while the test runs."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(name, files):
        made.append(name)
        _write_package(tmp_path, name, files)
        return importlib.import_module(name)

    yield make
    for mod in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[mod]


def test_a_new_file_with_a_decorator_is_the_whole_registration(temp_package):
    pkg = temp_package("regpkg_new", {
        "alpha.py": '''
            from regpkg_new import THINGS

            @THINGS.register("Alpha", aliases=("AlphaV2",))
            class Alpha:
                def __init__(self, width: int = 2):
                    self.width = width
        ''',
        "beta.py": '''
            from regpkg_new import THINGS

            @THINGS.register()
            def beta():
                return "b"
        ''',
        "helpers.py": "VALUE = 1  # no registration: never imported by the registry\n",
    })
    reg = pkg.THINGS
    assert reg.names() == ["Alpha", "beta"]
    assert "alphav2" in reg and "ALPHA" in reg and "gamma" not in reg
    assert "regpkg_new.alpha" not in sys.modules  # known from the source alone
    assert reg.modules() == ["regpkg_new.alpha", "regpkg_new.beta"]
    assert reg.build("alphav2", width=5).width == 5
    assert "regpkg_new.alpha" in sys.modules and "regpkg_new.beta" not in sys.modules
    assert reg.canonical_name("ALPHAV2") == "Alpha"
    assert reg.build("BETA") == "b"
    with pytest.raises(UnknownNameError, match="did you mean 'Alpha'"):
        reg.get("Alpah")


def test_a_registration_the_scan_cannot_read_is_an_error_naming_its_line(temp_package):
    pkg = temp_package("regpkg_bad", {
        "dyn.py": '''
            from regpkg_bad import THINGS
            NAME = "Dyn"

            @THINGS.register(NAME)
            class Dyn:
                pass
        ''',
    })
    with pytest.raises(ValueError, match=r"dyn\.py:5: register\(\) needs literal string names"):
        pkg.THINGS.names()


def test_one_name_in_two_modules_is_an_error(temp_package):
    text = '''
        from {pkg} import THINGS

        @THINGS.register("Same")
        class Same:
            pass
    '''
    pkg = temp_package("regpkg_dup", {"a.py": text.format(pkg="regpkg_dup"), "b.py": text.format(pkg="regpkg_dup")})
    with pytest.raises(ValueError, match=r"'Same' is registered twice \(regpkg_dup\.a and regpkg_dup\.b\)"):
        pkg.THINGS.names()


def test_a_plain_registry_holds_what_is_registered_at_run_time():
    reg = Registry("widget")
    reg.register("Knob", aliases=["dial"])(dict)
    assert reg.names() == ["Knob"] and reg.get("DIAL") is dict and reg.modules() == []
    with pytest.raises(ValueError, match="package and variable go together"):
        Registry("widget", package="models")


def test_unregister_removes_the_entry_and_its_aliases():
    reg = Registry("widget")
    reg.register("Knob", aliases=["dial"])(dict)
    reg.unregister("dial")
    assert reg.names() == [] and "Knob" not in reg and "dial" not in reg
    with pytest.raises(KeyError, match="widget 'Knob' was not registered at run time"):
        reg.unregister("Knob")
    reg.register("Knob")(list)  # the name is free again, for another object
    assert reg.get("knob") is list
