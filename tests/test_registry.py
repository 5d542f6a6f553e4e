"""The generic registry: members found by their package's modules, duplicates and unknown names refused."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdcore.errors import HarnessError
from kdcore.registry import Registry


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry[type]]:
    """A package `toyreg` with a registry in its `base` module and a member defined in another module."""
    package = tmp_path / "toyreg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("from kdcore.registry import Registry\nTOYS = Registry('toy', 'toyreg')\n")
    (package / "ball.py").write_text("from toyreg.base import TOYS\n\n@TOYS.register('ball')\nclass Ball: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("toyreg.base").TOYS
    for name in [m for m in sys.modules if m == "toyreg" or m.startswith("toyreg.")]:
        del sys.modules[name]


def test_a_member_is_found_without_an_import_list(toy_package: Registry[type]) -> None:
    assert "toyreg.ball" not in sys.modules
    assert toy_package.lookup("ball").__name__ == "Ball"
    assert (
        toy_package.names() == ["ball"] and "ball" in toy_package and dict(toy_package) == {"ball": toy_package["ball"]}
    )


def test_unknown_names_and_duplicates_are_one_line_errors(toy_package: Registry[type]) -> None:
    with pytest.raises(HarnessError, match=r"^unknown toy 'kite'; valid choices: ball$"):
        toy_package.lookup("kite")
    with pytest.raises(HarnessError, match=r"^toy 'ball' is registered twice$"):
        toy_package.add("ball", type("OtherBall", (), {}))


def test_registering_the_same_member_again_is_harmless() -> None:
    registry: Registry[int] = Registry("number")
    registry.add("one", 1)
    assert registry.add("one", 1) == 1 and registry.lookup("one") == 1 and len(registry) == 1


def test_the_projects_registries_find_their_members_and_refuse_unknown_names() -> None:
    """Methods, divergences, tasks and backends are registries: found without an import list (a fresh `import tasks`
    imports no benchmark module until a task is looked up, and looking one up imports no torch), unknown names
    refused in one line."""
    import subprocess

    script = (
        "import sys, tasks; before = 'tasks.benchmarks.gsm8k' in sys.modules; names = tasks.TASKS.names()\n"
        "print(before, 'torch' in sys.modules, ','.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"]
    assert {"arith", "gsm8k", "math500", "humaneval", "codealpaca"} <= set(out[2].split(","))
    from tasks.backends import BACKENDS, backend_choices, resolve_backend
    from trainers.divergences import DIVERGENCES
    from trainers.objectives import METHODS

    assert isinstance(METHODS, Registry) and isinstance(DIVERGENCES, Registry) and isinstance(BACKENDS, Registry)
    assert backend_choices() == ["auto", "transformers", "vllm"] and resolve_backend("transformers") == "transformers"
    for registry, kind in ((METHODS, "method"), (DIVERGENCES, "divergence"), (BACKENDS, "backend")):
        with pytest.raises(HarnessError, match=rf"^unknown {kind} 'nope'; valid choices: "):
            registry.lookup("nope")
    with pytest.raises(HarnessError, match=r"^unknown backend 'nope'; valid choices: auto, transformers, vllm$"):
        resolve_backend("nope")
