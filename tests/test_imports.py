"""Imports point one way (DESIGN.md section 1).

The framework-neutral modules must not pull in Tornado, Twisted or pycurl, and the two ``*_io``
folders must not import each other. Each check runs in a fresh interpreter: the test process
itself has Twisted loaded (``tests/conftest.py`` installs the asyncio reactor), so its
``sys.modules`` proves nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("tornado", "twisted", "pycurl", "aiohttp")

# Prints the framework modules present in sys.modules after importing MODULES (and every
# submodule of corduroy2.protocol).
_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    modules = json.loads(sys.argv[1])
    loaded = []
    for name in modules:
        module = importlib.import_module(name)
        loaded.append(name)
        if name == "corduroy2.protocol":
            for info in pkgutil.iter_modules(module.__path__, "corduroy2.protocol."):
                importlib.import_module(info.name)
                loaded.append(info.name)
    frameworks = sorted(
        m for m in sys.modules
        if m.split(".")[0] in ("tornado", "twisted", "pycurl", "aiohttp")
    )
    print(json.dumps({"loaded": loaded, "frameworks": frameworks}))
    """
)


def _probe(*modules: str) -> dict[str, list[str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(modules))],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


NEUTRAL = [
    "corduroy2",
    "corduroy2.errors",
    "corduroy2.protocol",
    "corduroy2.backend",
    "corduroy2.api",
    "corduroy2.pipeline",
    "corduroy2.blocking",
    "corduroy2.testing",
]


@pytest.mark.parametrize("module", NEUTRAL)
def test_neutral_module_imports_no_framework(module: str) -> None:
    result = _probe(module)
    assert module in result["loaded"]
    assert result["frameworks"] == []


def test_all_neutral_modules_together_import_no_framework() -> None:
    result = _probe(*NEUTRAL)
    # The protocol submodules were really imported, not just the package.
    assert {"corduroy2.protocol.urls", "corduroy2.protocol.requests",
            "corduroy2.protocol.responses"} <= set(result["loaded"])
    assert result["frameworks"] == []


def test_tornado_io_does_not_import_twisted() -> None:
    frameworks = _probe("corduroy2.tornado_io")["frameworks"]
    assert "tornado" in frameworks  # the probe sees what it should
    assert [m for m in frameworks if m.split(".")[0] == "twisted"] == []


def test_tornado_io_imports_aiohttp_only_for_its_client() -> None:
    assert [m for m in _probe("corduroy2.tornado_io")["frameworks"]
            if m.split(".")[0] == "aiohttp"] == []


def test_aiohttp_client_without_aiohttp() -> None:
    """Without aiohttp the Tornado front door works, and only ``client="aiohttp"`` fails, when
    the Couch is made, saying what to install."""
    pytest.importorskip("tornado", reason="tornado is not installed")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["aiohttp"] = None  # as if it were not installed: importing it fails
        from corduroy2.tornado_io import Couch
        Couch("http://127.0.0.1:5984", client="simple").close()
        try:
            Couch("http://127.0.0.1:5984", client="aiohttp")
        except ImportError as exc:
            print(exc)
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "client='aiohttp' needs aiohttp, which is not installed: pip install " \
        "'corduroy2[aiohttp]'" in proc.stdout


def test_twisted_io_does_not_import_tornado_or_pycurl() -> None:
    frameworks = _probe("corduroy2.twisted_io")["frameworks"]
    assert "twisted" in frameworks
    assert [m for m in frameworks if m.split(".")[0] in ("tornado", "pycurl")] == []


FRONT_DOORS = ["corduroy2.tornado_io", "corduroy2.twisted_io", "corduroy2.blocking"]


@pytest.mark.parametrize("door", FRONT_DOORS)
def test_front_door_exports_the_same_names(door: str) -> None:
    import corduroy2.api as api

    module = importlib.import_module(door)
    for name in ("Couch", "Database", "relax"):
        assert name in module.__all__, f"{door}.__all__ lacks {name}"
        assert hasattr(module, name), f"{door} has no {name}"
    assert issubclass(module.Couch, api.Couch)
    assert issubclass(module.Database, api.Database)
    assert module.Couch is not api.Couch and module.Database is not api.Database
    # The two classes are bound to each other, not to another front door's.
    assert module.Couch.database_class is module.Database
    assert module.Database.couch_class is module.Couch
    assert callable(module.relax)


def _lint_imports() -> list[str]:
    exe = Path(sys.executable).parent / "lint-imports"
    if exe.exists():
        return [str(exe)]
    # Same entry point, without relying on the console script being installed.
    return [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
            "sys.argv[0] = 'lint-imports'; lint_imports_command()"]


def test_import_linter_contracts_hold() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [*_lint_imports(), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # Every contract was really checked (a config that silently lost one would still pass).
    assert "front doors -> api -> pipeline -> backend -> protocol -> errors KEPT" in output
    assert "no import cycle between the modules of one package KEPT" in output
    assert "the framework-neutral modules import no framework KEPT" in output
