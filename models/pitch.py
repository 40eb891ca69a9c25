"""Pitch task: the annotated melody f0 on a frame grid (targets only, no network yet)."""

from __future__ import annotations

import numpy as np

from .task import TASKS, Task, annotations


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """f0 in Hz per frame (0 where unvoiced) from the first ``pitch_contour`` annotation
    (``pitch_hz`` / ``pitch_midi`` converted).

    Each frame takes the contour sample nearest to it, provided that sample lies
    within half a contour hop; frames without a nearby voiced sample are 0.
    """
    times = np.asarray(frame_times, dtype=float)
    f0 = np.zeros(len(times), dtype=np.float32)
    anns = annotations(jam, "pitch_contour")
    if not anns or len(anns[0].data) == 0:
        return {"f0_hz": f0}
    data = anns[0].data
    ct = np.array([obs.time for obs in data], dtype=float)
    hz = np.array([obs.value["frequency"] for obs in data], dtype=float)
    voiced = np.array([bool(obs.value["voiced"]) for obs in data])
    order = np.argsort(ct, kind="stable")
    ct, hz, voiced = ct[order], hz[order], voiced[order]
    hop = float(np.median(np.diff(ct))) if len(ct) > 1 else 0.01
    pos = np.clip(np.searchsorted(ct, times), 1, max(len(ct) - 1, 1))
    left = pos - 1
    nearest = np.where(np.abs(times - ct[left]) <= np.abs(ct[np.minimum(pos, len(ct) - 1)] - times), left, pos)
    nearest = np.minimum(nearest, len(ct) - 1)
    ok = (np.abs(ct[nearest] - times) <= hop / 2 + 1e-9) & voiced[nearest] & (hz[nearest] > 0)
    f0[ok] = hz[nearest[ok]]
    return {"f0_hz": f0}


@TASKS.register
class PitchTask(Task):
    """Melody f0; the store keeps f0 per frame, the salience target is built when sampling."""

    name = "pitch"
    namespace = "pitch_contour"
    feature = "hcqt"  # f0 lives on the harmonic CQT's frame grid (hop 256)
    targets = ("targets/f0_hz",)
    trainable = False

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """f0 scaled by 2^(n/12); unvoiced frames (0) stay 0."""
        f0 = targets["targets/f0_hz"]
        return {**targets, "targets/f0_hz": (f0 * np.float32(2.0 ** (n / 12))).astype(f0.dtype)}
