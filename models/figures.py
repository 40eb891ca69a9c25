"""Figures of scored tracks: a feature image with labelled segments under it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirpipe.storage.atomic import atomic_path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (workers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write atomically (the format from the suffix, PNG by default) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def salience_axes(salience: np.ndarray, frame_rate: float, grid, title: str):
    """(fig, ax) with a (T, bins) salience map on its log-frequency grid, octaves labelled C1, C2, ..."""
    plt = pyplot()
    duration = salience.shape[0] / frame_rate
    fig, ax = plt.subplots(figsize=(14, 5))
    ax.imshow(
        np.asarray(salience, np.float32).T,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        extent=(0, duration, -0.5, salience.shape[1] - 0.5),
    )
    ticks = np.arange(0, salience.shape[1] + 1, grid.bins_per_octave)
    ax.set_yticks(ticks, [f"C{1 + i}" for i in range(len(ticks))])
    ax.set_ylabel("f0 (salience bins)")
    ax.set_xlabel("time (s)")
    ax.set_title(title)
    return fig, ax


def plot_segments(
    path: Path, features: np.ndarray, frame_rate: float, rows: Sequence[tuple[str, Any]], title: str, ylabel: str = "bin"
) -> None:
    """``features`` (T, F) over time, then one strip per (name, JAMS annotation) with its labelled segments."""
    plt = pyplot()

    duration = features.shape[0] / frame_rate
    fig, axes = plt.subplots(
        1 + len(rows), 1, figsize=(14, 4 + len(rows)), sharex=True, gridspec_kw={"height_ratios": [4] + [1] * len(rows)}
    )
    ax = axes[0]
    ax.imshow(
        features.T.astype(np.float32), origin="lower", aspect="auto", extent=(0, duration, 0, features.shape[1]), cmap="magma"
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for axis, (name, ann) in zip(axes[1:], rows):
        for i, obs in enumerate(ann.data):
            axis.axvspan(obs.time, obs.time + obs.duration, color=f"C{i % 10}", alpha=0.35)
            if obs.duration > 0.01 * duration:
                axis.text(obs.time + obs.duration / 2, 0.5, str(obs.value), ha="center", va="center", fontsize=7, rotation=90)
        axis.set_yticks([])
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("time (s)")
    save_figure(fig, path)


def plot_salience(
    path: Path, salience: np.ndarray, frame_rate: float, grid, contours: Sequence[tuple[str, object]], title: str
) -> None:
    """A (T, bins) salience map on its log-frequency grid with ``pitch_contour`` annotations over it
    (voiced frames only; one colour per annotation)."""
    from .salience import contour_arrays

    fig, ax = salience_axes(salience, frame_rate, grid, title)
    styles = [dict(color="tab:blue", lw=2.5, alpha=0.5), dict(color="tab:red", lw=0, marker=".", ms=2)]
    for (name, ann), style in zip(contours, styles * len(contours)):
        times, hz = contour_arrays(ann)
        bins = np.where(hz > 0, grid.bin_of(np.abs(hz)), np.nan)
        ax.plot(times, bins, label=name, **style)
    ax.legend(loc="upper right")
    save_figure(fig, path)


def plot_robustness(path: Path, shifts: Sequence[int], table: dict[str, list[float | None]], title: str) -> None:
    """One line per metric: its pooled score over the test tracks at each pitch shift (semitones)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (metric, values) in enumerate(table.items()):
        y = [np.nan if v is None else v for v in values]
        ax.plot(list(shifts), y, marker="o", color=f"C{i % 10}", label=metric)
    ax.axvline(0, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(list(shifts))
    ax.set_xlabel("pitch shift (semitones)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, path)


def plot_salience_points(
    path: Path, salience: np.ndarray, frame_rate: float, grid, rows: Sequence[tuple[str, tuple[np.ndarray, list]]], title: str
) -> None:
    """A (T, bins) salience map with multi-f0 frames over it: (name, (times, f0s per frame)) each,
    one colour per row (the multi-f0 counterpart of ``plot_salience``)."""
    fig, ax = salience_axes(salience, frame_rate, grid, title)
    styles = [dict(color="tab:blue", s=6, alpha=0.35, marker="s", lw=0), dict(color="tab:red", s=2, marker=".", lw=0)]
    for (name, (times, freqs)), style in zip(rows, styles * len(rows)):
        t = np.repeat(np.asarray(times, float), [len(f) for f in freqs])
        hz = np.concatenate([np.asarray(f, float) for f in freqs]) if len(freqs) else np.zeros(0)
        ax.scatter(t, grid.bin_of(hz), label=name, **style)
    ax.legend(loc="upper right")
    save_figure(fig, path)
