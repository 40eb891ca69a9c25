"""``mirpipe.workdir.Workdir``: every path of a workdir in one place, the same paths as before."""

from __future__ import annotations

import ast
from pathlib import Path

from mirpipe.models.trainer import PROGRESS_FILE
from mirpipe.pipeline.ledger import LEDGER_DIR
from mirpipe.pipeline.runner import LOCK_NAME
from mirpipe.pipeline.workdir import RECORD
from mirpipe.stage import StageContext
from mirpipe.stages.ingest import MANIFEST
from mirpipe.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]


def test_layout(tmp_path):
    w = Workdir(tmp_path)
    assert w.manifest == tmp_path / "manifest.json"
    assert w.corpus() == tmp_path / "corpus" and w.corpus("/data/c") == Path("/data/c")
    assert w.store_root() == tmp_path / "features" and w.store_root("/scratch/s") == Path("/scratch/s")
    assert w.train_dir("chord") == tmp_path / "train" / "chord"
    assert w.checkpoint("chord") == tmp_path / "train" / "chord" / "best.pt"
    assert w.checkpoint("pitch", "last") == tmp_path / "train" / "pitch" / "last.pt"
    assert w.progress("pitch") == tmp_path / "train" / "pitch" / "progress.json"
    assert w.report_dir("chord") == tmp_path / "reports" / "chord"
    assert w.scores("chord") == tmp_path / "reports" / "chord" / "scores.json"
    assert w.scores_csv("chord") == tmp_path / "reports" / "chord" / "scores.csv"
    assert w.figures("chord") == tmp_path / "reports" / "chord" / "figures"
    assert w.ledger == tmp_path / "ledger"
    assert w.failures_log == tmp_path / "logs" / "failures.log"
    assert w.lock == tmp_path / ".mirpipe.lock"
    assert w.record == tmp_path / "mirpipe.yaml"


def test_the_names_the_rooms_use_are_the_workdirs():
    assert (MANIFEST, LEDGER_DIR, LOCK_NAME, RECORD, PROGRESS_FILE) == (
        Workdir.MANIFEST,
        Workdir.LEDGER,
        Workdir.LOCK,
        Workdir.RECORD,
        Workdir.PROGRESS,
    )


def test_stage_context_has_it(tmp_path):
    ctx = StageContext(tmp_path, {})
    assert ctx.dirs == Workdir(tmp_path)
    assert ctx.path("a", "b") == ctx.dirs.path("a", "b") == tmp_path / "a" / "b"


def test_core_module_imports_no_room():
    tree = ast.parse((ROOT / "mirpipe" / "workdir.py").read_text())
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [n for n in names if n.split(".")[:2] in (["mirpipe", r] for r in ("pipeline", "stages", "models", "storage"))]


def test_stages_import_no_sibling_for_a_path():
    """Stages ask ``ctx.dirs`` for paths; a sibling import is for what it reads (the manifest) or types."""
    banned = {"store_root", "train_dir", "report_dir", "MANIFEST"}
    for path in (ROOT / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or "stages" in (node.module or "")):
                assert not banned & {a.name for a in node.names}, (path.name, node.module)
