"""Multipitch task: every sounding note's f0 from the harmonic CQT (the multi-f0 variant of
Bittner et al. 2017), scored with ``mir_eval.multipitch``.

- **Store**: the f0s of the notes sounding at each HCQT frame, ``targets/notes_hz``
  ``(T, MAX_NOTES)`` (Hz, lowest first; 0 an empty slot), from the track's ``note_hz``
  annotation (``note_midi`` converted). A shift of n semitones scales them by 2^(n/12).
- **Batches**: ``on_device`` builds the salience target from them on the trainer's device (the
  maximum of each note's Gaussian, peak 1, sigma 1 bin), as the melody task builds its own.
- **Network**: the pitch task's ``SalienceNet`` and settings (``train.models.multipitch``);
  BCE on the salience.
- **After training**: ``tune`` sweeps the peak threshold on the validation split for the best
  pooled multi-f0 accuracy (kept in the checkpoint's ``state``).
- **Decoding**: per frame, every local maximum along frequency at or above the threshold,
  refined to sub-bin frequency; a JAMS ``note_hz`` annotation of one-frame observations.
- **Scores**: ``mir_eval.multipitch`` (precision, recall, accuracy, the error rates and their
  chroma variants) with the reference on a 10 ms grid, pooled over tracks by the counts each
  metric divides by.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mirpipe.annotations.transpose import scale_hz

from . import multif0 as mf
from . import salience as sal
from .pitch import PitchModel, predict_salience, salience_net
from .task import TASKS, Decoder, Network, Scorer, Scores, Targets, Task, annotations

NOTES = "targets/notes_hz"
FEATURE = "hcqt"
SALIENCE = "targets/salience"
THRESHOLDS = np.round(np.concatenate([np.arange(0.02, 0.1, 0.01), np.arange(0.1, 0.951, 0.025)]), 4)


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """The f0s sounding at each frame from the first ``note_hz`` annotation (``note_midi``
    converted); a track without notes is ``-1`` everywhere (no reference: losses skip it)."""
    anns = annotations(jam, "note_hz")  # type: ignore[operator]  # mypy takes the name for the __future__ feature
    if not anns:
        return {"notes_hz": np.full((len(frame_times), mf.MAX_NOTES), -1.0, np.float32)}
    data = anns[0].data
    starts = np.array([obs.time for obs in data], float)
    ends = starts + np.array([obs.duration for obs in data], float)
    hz = np.array([float(obs.value) for obs in data], float)
    return {"notes_hz": mf.notes_per_frame(starts, ends, hz, frame_times)}


class MultipitchDecoding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(None, gt=0, lt=1, description="peak threshold; null: the one tuned on the validation split")


class MultipitchTargets(Targets):
    """The f0s of the notes sounding per HCQT frame; they scale by 2^(n/12) under a shift."""

    namespace = "note_hz"
    arrays = (NOTES,)
    moves = "note_hz"

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """f0s scaled by 2^(n/12); empty slots (0) and padding (< 0) stay."""
        f = targets[NOTES]
        return {**targets, NOTES: np.where(f > 0, f * np.float32(2.0 ** (n / 12)), f).astype(f.dtype)}

    def transpose_annotation(self, annotation, n: int):
        return scale_hz(annotation, n)


class MultipitchNetwork(Network):
    Params = PitchModel
    metric_name = "note_recall_at_r"  # share of reference notes among each frame's n_ref highest peaks
    grid = sal.Grid()
    sigma_bins = 1.0

    def on_device(self, batch):
        return {**batch, SALIENCE: mf.multi_target_torch(batch[NOTES], self.grid, self.sigma_bins)}

    def build(self, n_bins: int, params: PitchModel):
        return salience_net("multipitch", self.grid, n_bins, params)

    def loss(self, outputs, batch):
        from .pitch_net import masked_bce

        total = masked_bce(outputs, batch[SALIENCE], batch[NOTES][..., 0])
        return total, {"bce": total.detach()}

    def metric(self, outputs, batch) -> tuple[float, float]:
        """Threshold-free: of the reference notes, the share within 50 cents of one of their
        frame's n_ref highest local maxima (n_ref: the frame's reference notes)."""
        import torch

        notes = batch[NOTES].float()
        with torch.no_grad():
            s = outputs.float()
            lower = torch.nn.functional.pad(s[..., :-1], (1, 0), value=float("-inf"))
            upper = torch.nn.functional.pad(s[..., 1:], (0, 1), value=float("-inf"))
            peaked = torch.where((s > lower) & (s >= upper), s, torch.full_like(s, float("-inf")))
            K = notes.shape[-1]
            top = peaked.topk(K, dim=-1).indices.float()  # (B, T, K) bins, highest peak first
            n_ref = (notes > 0).sum(-1, keepdim=True)
            ranked = torch.arange(K, device=s.device) < n_ref  # the n_ref highest
            ref_bins = self.grid.bins_per_octave * torch.log2(notes.clamp_min(1e-6) / self.grid.fmin)
            close = (ref_bins[..., :, None] - top[..., None, :]).abs() < 2.5  # (B, T, K ref, K peaks)
            hit = (close & ranked[..., None, :]).any(-1) & (notes > 0)
        return float(hit.sum()), float((notes > 0).sum())


class MultipitchDecoder(Decoder):
    DecodeParams = MultipitchDecoding
    grid = sal.Grid()

    def tune(self, model, batches, device) -> dict[str, Any]:
        """The peak threshold with the best pooled multi-f0 accuracy on the validation batches."""
        import torch

        matches = []
        model.eval()
        with torch.no_grad():
            for batch in batches:
                s = torch.sigmoid(model(batch[FEATURE].to(device)).float()).cpu().numpy()
                notes = batch[NOTES].cpu().numpy()
                matches += [mf.frame_matches(s[i], notes[i], self.grid) for i in range(s.shape[0])]
        threshold, accuracy = mf.tune_threshold(matches, THRESHOLDS)
        return {"threshold": threshold, "val_accuracy": accuracy}

    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        return predict_salience(model, features, device)

    def decode(self, prediction, frame_times, duration, state: Mapping[str, Any], options: MultipitchDecoding):
        threshold = options.threshold or float(state.get("threshold", 0.5))
        times = np.asarray(frame_times, float)
        hop = float(times[1] - times[0]) if len(times) > 1 else mf.REF_HOP
        return mf.multif0_annotation(times, mf.peaks(prediction, threshold, self.grid), hop, duration)


class MultipitchScorer(Scorer):
    metrics = mf.METRICS
    score_columns = ("Acc", "P", "R", "Etot", "Acc_chroma")
    grid = sal.Grid()

    def score(self, ref, est) -> Scores:
        rt, rf = mf.frames_of_notes(ref)
        et, ef = mf.frames_of_estimate(est)
        return mf.multipitch_scores(rt, rf, et, ef)

    def summary(self, scores: Mapping[str, Any]) -> str:
        return " ".join(f"{m} {scores[m]['score']:.2f}" for m in ("Acc", "P", "R") if m in scores)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        from .figures import plot_salience_points

        rows = [("reference", mf.frames_of_notes(ref)), ("estimate", mf.frames_of_estimate(est))]
        plot_salience_points(path, prediction, frame_rate, self.grid, rows, title)


@TASKS.register
class MultipitchTask(Task):
    """Every sounding f0; the store keeps f0s per frame, the salience target is built when sampling."""

    name = "multipitch"
    feature = FEATURE
    targets = MultipitchTargets()
    network = MultipitchNetwork()
    decoder = MultipitchDecoder()
    scorer = MultipitchScorer()
