"""The house rules, checked on the installed package: imports run one way, ``stages/`` holds stages
only, and the demo is a plugin with its own extra.

Layers, top to bottom (a module may import its own layer and the layers below, never above):

- ``mirpipe.pipeline``: orchestration (CLI, config, cluster, runner, ledger, predict);
- ``mirpipe.stages``, ``mirpipe.importers`` and the plugin ``mirpipe.demo``;
- ``mirpipe.models``, ``mirpipe.storage`` (they never import each other's callers);
- the core: every other ``mirpipe.*`` module (registry, records, errors, the stage contract,
  audio, annotations, corpus scan, shift semantics).

``mirpipe/__init__.py`` is the public facade above all of them (it may reach any layer, lazily).
The demo imports only public names (no ``_private`` name, no ``mirpipe.pipeline``).
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

import mirpipe

LAYERS = {"pipeline": 4, "stages": 3, "importers": 3, "demo": 3, "models": 2, "storage": 2}
CORE = 1


def _package_dirs() -> dict[str, Path]:
    """Sub-package -> the folder it is installed from (setuptools maps top-level folders into ``mirpipe``)."""
    import importlib

    out = {"": Path(mirpipe.__file__).parent}
    for sub in LAYERS:
        out[sub] = Path(importlib.import_module(f"mirpipe.{sub}").__file__).parent
    return out


def _modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    out: dict[str, Path] = {}
    for sub, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if sub == "" and parts and parts[0] in LAYERS:
                continue  # a folder of the same name inside mirpipe/ would be shadowed; none exists
            out[".".join(["mirpipe", *([sub] if sub else []), *parts])] = path
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], CORE) if len(parts) > 1 else 5  # "mirpipe" itself: the facade


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def test_the_package_has_the_rooms_of_the_design():
    modules = _modules()
    for name in (
        "mirpipe.stage",
        "mirpipe.errors",
        "mirpipe.records",
        "mirpipe.registry",
        "mirpipe.audio.io",
        "mirpipe.annotations.prepare",
        "mirpipe.demo.stage",
        "mirpipe.pipeline.cli",
    ):
        assert name in modules, name


def test_imports_run_one_way():
    wrong = []
    modules = _modules()
    for module, path in sorted(modules.items()):
        if module in ("mirpipe", "mirpipe.__main__"):
            continue  # the facade and ``python -m mirpipe`` sit above every layer
        for target, names, line in _imports(module, path):
            if not target.startswith("mirpipe"):
                continue
            # ``from mirpipe import columns`` imports the module mirpipe.columns; ``from mirpipe import
            # __version__`` only the facade's own attribute (the facade is loaded by any mirpipe import)
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            targets = submodules or ([] if target == "mirpipe" else [target])
            for t in targets:
                if layer(t) > layer(module):
                    wrong.append(f"{path}:{line}: {module} (layer {layer(module)}) imports {t} (layer {layer(t)})")
    assert not wrong, "imports against the direction pipeline -> stages -> models/storage -> core:\n" + "\n".join(wrong)


def test_models_and_storage_stay_apart_from_their_callers():
    wrong = []
    for module, path in _modules().items():
        if layer(module) != 2:
            continue
        for target, _, line in _imports(module, path):
            if target.startswith(("mirpipe.pipeline", "mirpipe.stages", "mirpipe.importers", "mirpipe.demo")):
                wrong.append(f"{path}:{line}: {module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_demo_imports_only_public_names():
    wrong = []
    for module, path in _modules().items():
        if not module.startswith("mirpipe.demo"):
            continue
        for target, names, line in _imports(module, path):
            if not target.startswith("mirpipe") or target.startswith("mirpipe.demo"):
                continue
            if target.startswith("mirpipe.pipeline") or any(p.startswith("_") for p in target.split(".")):
                wrong.append(f"{path}:{line}: {target}")
            wrong += [f"{path}:{line}: {target}.{n}" for n in names if n.startswith("_")]
    assert not wrong, "the demo reaches past the public API:\n" + "\n".join(wrong)


def test_stages_holds_only_registered_stages():
    from mirpipe.stages import STAGES

    folder = _package_dirs()["stages"]
    registered = {type(stage).__module__ for stage in STAGES.values()}
    strays = [
        p.name for p in sorted(folder.glob("*.py")) if p.name != "__init__.py" and f"mirpipe.stages.{p.stem}" not in registered
    ]
    assert not strays, f"modules in stages/ that register no stage: {strays}"
    assert not [p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"], "stages/ has sub-packages"


def test_the_demo_is_a_plugin_stage_with_its_own_extra():
    from mirpipe.stages import STAGES

    assert type(STAGES.get("synthesize")).__module__ == "mirpipe.demo.stage"
    eps = importlib.metadata.entry_points(group="mirpipe.stages")
    assert any(ep.value == "mirpipe.demo.stage" for ep in eps)
    requires = importlib.metadata.requires("mirpipe") or []
    fluid = [r for r in requires if r.lower().startswith("pyfluidsynth")]
    assert fluid and all('extra == "demo"' in r for r in fluid), fluid


@pytest.mark.slow
def test_a_run_on_your_own_corpus_needs_no_fluidsynth(tmp_path, fault_corpus):
    """An install without the [demo] extra: ``import fluidsynth`` fails, and a run over a folder corpus
    (a few demo tracks rendered beforehand) still goes through ingest and features."""
    import json
    import os
    import subprocess
    import sys

    corpus = fault_corpus
    block = tmp_path / "block"
    block.mkdir()
    (block / "fluidsynth.py").write_text("raise ImportError('pyfluidsynth is not installed (no [demo] extra)')\n")
    (tmp_path / "pipeline.yaml").write_text(
        json.dumps(
            {
                "ingest": {"corpus": str(corpus)},
                "augment": {"shifts": [-1, 0, 1]},
                "train": {"tasks": []},
                "evaluate": {"tasks": []},
            }
        )
    )
    (tmp_path / "cluster.yaml").write_text(json.dumps({"type": "sync"}))
    env = {**os.environ, "PYTHONPATH": str(block)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirpipe",
            "run",
            "--workdir",
            str(tmp_path / "work"),
            "--config",
            str(tmp_path / "pipeline.yaml"),
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["stages"]["features"]["done"] == out["stages"]["ingest"]["done"] >= 2, out
    check = subprocess.run([sys.executable, "-c", "import fluidsynth"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "no [demo] extra" in check.stderr
