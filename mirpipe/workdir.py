"""Every path in a workdir, in one place.

Stages, the runner and the CLI ask a ``Workdir`` (``StageContext.dirs``) where a file goes instead of
joining names themselves or importing another stage's path helper. Paths that depend on configuration
take it as an argument (the corpus and the store may live outside the workdir). Reading what is in
those files stays with the code that owns the format (the manifest: ``stages.ingest.read_manifest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workdir:
    """The layout of the workdir at ``root``::

    manifest.json               ingest's manifest
    corpus/                     the default corpus (the demo's)
    features/                   the default feature store
    train/<task>/{best,last}.pt checkpoints, progress.json, tb/
    reports/<task>/             scores.json, scores.csv, estimates/, figures/
    ledger/  logs/              completion records; failures.log
    mirpipe.yaml  .mirpipe.lock the recorded configuration; the run lock
    experiments/<name>/         an experiment: a workdir of its own for train and evaluate

    An experiment's workdir has ``shared`` set to the workdir it belongs to: the manifest, the corpus
    and the default store are that one's (its features are reused, never recomputed).
    """

    root: Path
    shared: Path | None = None  # the workdir whose manifest, corpus and store this one reads

    MANIFEST = "manifest.json"
    PROGRESS = "progress.json"
    SCORES = "scores.json"
    LEDGER = "ledger"
    LOCK = ".mirpipe.lock"
    RECORD = "mirpipe.yaml"

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    def _shared(self, *parts: str) -> Path:
        return Path(self.shared if self.shared is not None else self.root).joinpath(*parts)

    @property
    def manifest(self) -> Path:
        return self._shared(self.MANIFEST)

    def corpus(self, configured: Path | str | None = None) -> Path:
        """The corpus folder: ``ingest.corpus`` when set, else ``<workdir>/corpus``."""
        return Path(configured) if configured is not None else self._shared("corpus")

    def store_root(self, store_path: Path | str | None = None) -> Path:
        """The feature store: ``features.store_path`` when set, else ``<workdir>/features``."""
        return Path(store_path) if store_path is not None else self._shared("features")

    @property
    def experiments(self) -> Path:
        """Where experiments on this workdir's store live (``mirpipe run --experiment NAME``)."""
        return self.path("experiments")

    def experiment(self, name: str) -> Workdir:
        """The workdir of experiment ``name``: train and evaluate of its own, this one's manifest and store."""
        return Workdir(self.experiments / name, self.shared if self.shared is not None else self.root)

    @property
    def train_root(self) -> Path:
        """Where every task's training runs (TensorBoard's ``--logdir``)."""
        return self.path("train")

    def train_dir(self, task: str) -> Path:
        return self.path("train", task)

    def checkpoint(self, task: str, which: str = "best") -> Path:
        """``train/<task>/<which>.pt`` (``best`` or ``last``)."""
        return self.train_dir(task) / f"{which}.pt"

    def progress(self, task: str) -> Path:
        """The last epoch's figures of a task's training (``progress.json``)."""
        return self.train_dir(task) / self.PROGRESS

    def report_dir(self, task: str) -> Path:
        return self.path("reports", task)

    def scores(self, task: str) -> Path:
        """The pooled scores of a task (``reports/<task>/scores.json``)."""
        return self.report_dir(task) / self.SCORES

    def scores_csv(self, task: str) -> Path:
        return self.report_dir(task) / "scores.csv"

    def figures(self, task: str) -> Path:
        return self.report_dir(task) / "figures"

    @property
    def ledger(self) -> Path:
        return self.path(self.LEDGER)

    @property
    def logs(self) -> Path:
        return self.path("logs")

    @property
    def failures_log(self) -> Path:
        return self.logs / "failures.log"

    @property
    def lock(self) -> Path:
        return self.path(self.LOCK)

    @property
    def record(self) -> Path:
        """The configuration the workdir was run with (``pipeline.workdir``)."""
        return self.path(self.RECORD)
