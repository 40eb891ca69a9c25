"""``reports/index.html``: a static page built from what a workdir holds, rendered in a real headless
Chromium (skipped, saying why, when none is installed: ``bash scripts/report-browser.sh``)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from mirpipe.pipeline.experiments import compare_runs, write_comparison
from mirpipe.pipeline.report import write_report
from mirpipe.records import TaskScores
from mirpipe.workdir import Workdir


def _png(path) -> None:
    from mirpipe.models.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _workdir(root, offset: float = 0.0):
    dirs = Workdir(root)
    rng = np.random.default_rng(0)
    tracks = {f"track{i:02d}": {"majmin": float(rng.uniform(0.3, 0.9) + offset), "root": 0.8} for i in range(8)}
    scores = TaskScores(
        metrics={"majmin": 0.61, "root": 0.8},
        columns=["root", "majmin"],
        n_tracks=8,
        seconds=240.0,
        tracks=tracks,
        baseline={"name": "chroma templates", "majmin": 0.42, "root": 0.5, "n_tracks": 8},
        notes=["8 test tracks: a difference under ~0.1 is noise"],
    )
    dirs.scores("chord").parent.mkdir(parents=True, exist_ok=True)
    dirs.scores("chord").write_text(json.dumps(scores.to_json()))
    _png(dirs.figures("chord") / "track00.png")
    _png(dirs.report_dir("chord") / "robustness.png")
    return root


def test_the_page_holds_scores_intervals_figures_and_comparisons(tmp_path):
    base = _workdir(tmp_path / "base")
    other = _workdir(tmp_path / "other", offset=0.05)
    rows = compare_runs({"base": base, "other": other})
    write_comparison(Workdir(base).experiments / "compare" / "base-vs-other", rows, {"base": base, "other": other})
    page = write_report(base).read_text()
    assert page.count("<table") == 3  # scores, per track, the comparison
    assert "chroma templates" in page and "95% interval" in page and "track07" in page
    assert 'src="chord/robustness.png"' in page and 'href="chord/figures/track00.png"' in page
    assert "other against base" in page and 'src="../experiments/compare/base-vs-other/compare.png"' in page
    assert "http://" not in page and "https://" not in page  # no network request


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (bash scripts/report-browser.sh installs it)")
def test_the_page_renders_in_a_headless_browser(tmp_path):
    base = _workdir(tmp_path / "base")
    page = write_report(base)
    shot = tmp_path / "report.png"
    common = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    common += ["--user-data-dir=" + str(tmp_path / "profile"), "--virtual-time-budget=3000"]
    res = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.stdout.count("<table") == 2 and "track07" in dom.stdout
    console = [line for line in res.stderr.splitlines() + dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
    from PIL import Image

    with Image.open(shot) as im:  # something was drawn: not a blank page
        assert len(np.unique(np.asarray(im.convert("L")))) > 10
