"""mirpipe installs as one package: decoy ``models/``, ``storage/``, ``pipeline/``, ``stages/``
in the working directory (as dask-jobqueue workers start there) change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import small_config

DECOYS = ("models", "storage", "pipeline", "stages")


def plant_decoys(where: Path) -> None:
    for name in DECOYS:
        pkg = where / name
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('decoy package {name!r} was imported')\n")


def decoy_run(tmp_path: Path, cluster: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m mirpipe run`` from a directory holding decoys (``-m`` puts that directory on sys.path)."""
    plant_decoys(tmp_path)
    cfg = small_config(tracks=2, shifts=[0, 1]).model_dump(mode="json")
    cfg["synthesize"].update(min_duration=5.0, max_duration=6.0)
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"cluster": cluster}))
    return subprocess.run(
        [sys.executable, "-m", "mirpipe", "run", "--workdir", "work", "--until", "features", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_run_on_a_local_cluster_from_a_directory_with_decoy_packages(tmp_path):
    res = decoy_run(tmp_path, {"type": "local", "n_workers": 1, "memory_limit": "3GiB"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["stages"]["features"]["done"] == 2 and "decoy" not in res.stderr


@pytest.mark.slow
def test_the_wheel_installs_only_mirpipe_at_top_level(tmp_path, repo_root):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo_root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = tmp_path.glob("mirpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"mirpipe"}, top
    for sub in (
        "pipeline/cli.py",
        "stages/train.py",
        "storage/zarr_store.py",
        "models/chord.py",
        "demo/track.py",
        "importers/write.py",
        "pipeline/joblib_backend.py",
    ):
        assert f"mirpipe/{sub}" in names


def test_help_and_version_need_no_heavy_import():
    code = (
        "import sys; from mirpipe.pipeline.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('numpy', 'torch', 'librosa', 'dask', 'pydantic', 'zarr') if m in sys.modules]\n"
        "print(heavy)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
