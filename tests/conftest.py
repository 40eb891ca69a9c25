"""Shared fixtures: tiny demo corpora and configurations that keep the suite fast on 2 cores."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from pipeline.config import PipelineConfig, parse_cluster  # noqa: E402

SMALL_SHIFTS = [-2, 0, 3]


def small_config(tracks: int = 3, shifts=None, store: str = "zarr", seed: int = 0, **features) -> PipelineConfig:
    """A demo run of a few short tracks and three pitch shifts."""
    return PipelineConfig.model_validate(
        {
            "synthesize": {"tracks": tracks, "seed": seed, "min_duration": 6.0, "max_duration": 10.0, "solo_fraction": 0.34},
            "augment": {"shifts": shifts or SMALL_SHIFTS},
            "features": {"store": store, **features},
            "run": {"retries": 1, "retry_backoff": 0.0},
        }
    )


@pytest.fixture
def sync_cluster():
    return parse_cluster({"type": "sync"})


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
