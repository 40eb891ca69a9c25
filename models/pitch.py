"""Pitch task: melody f0 from the harmonic CQT (Bittner et al. 2017), scored with mir_eval.melody.

- **Store**: f0 in Hz per HCQT frame (``targets/f0_hz``; 0 unvoiced). A pitch shift of n
  semitones scales it by 2^(n/12) (``transpose``), exactly.
- **Batches**: ``on_device`` turns each batch's f0 into the salience target on the output
  grid (360 bins from C1, 60 bins/octave; a Gaussian along frequency, peak 1, sigma 1 bin = 20
  cents) on the trainer's device: the store never holds a salience matrix, and a batch crosses
  the loader's worker boundary as f0 and the HCQT's 8-bit codes.
- **Network**: ``models.pitch_net.SalienceNet``; loss: BCE on the salience.
- **After training**: ``tune`` sweeps the peak voicing threshold on the validation split (best
  frame overall accuracy) and fits the voicing classifier there (``salience.tune_voicing``: a
  logistic regression on a few numbers of the salience map, its threshold tuned for frame
  overall accuracy); both are kept in the checkpoint's ``state``.
- **Decoding**: per frame, the Viterbi path's (or the argmax) bin refined to sub-bin frequency
  (weighted mean around the peak), voiced where the peak salience reaches the threshold
  (``voicing: peak``, the default) or where the voicing classifier says so (``voicing:
  classifier``; checkpoints tuned before it existed decode with the peak); a JAMS ``pitch_contour``.
- **Scores**: ``mir_eval.melody`` (VR, VFA, RPA, RCA, OA) per track with weights in seconds
  (pooled over tracks exactly); ``baseline``: ``librosa.pyin`` scored the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mirpipe.annotations.transpose import scale_contour

from . import salience as sal
from .settings import since
from .task import TASKS, Baseline, Decoder, Network, Scorer, Scores, Targets, Task, annotations

F0 = "targets/f0_hz"
FEATURE = "hcqt"
SALIENCE = "targets/salience"


def encode(jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """f0 in Hz per frame (0 where unvoiced) from the first ``pitch_contour`` annotation
    (``pitch_hz`` / ``pitch_midi`` converted).

    Each frame takes the contour sample nearest to it, provided that sample lies
    within half a contour hop; frames without a nearby voiced sample are 0.
    """
    times = np.asarray(frame_times, dtype=float)
    f0 = np.zeros(len(times), dtype=np.float32)
    anns = annotations(jam, "pitch_contour")  # type: ignore[operator]  # mypy takes the name for the __future__ feature
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


class PitchModel(BaseModel):
    """Width and depth of the salience network. The default trains in a few CPU minutes; the
    paper's network (for a GPU) is ``channels: [128, 64, 64, 64], tall_channels: 8``."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(
        default_factory=lambda: [16, 16, 8],
        min_length=1,
        description="filters of the small convs, in order (the first two 5x5, the rest 3x3)",
    )
    tall_channels: int = Field(8, ge=1, description="filters of the tall conv")
    tall_bins: int = Field(70, ge=1, description="frequency bins the tall kernel spans (70 = 14 semitones)")
    tall_frames: int = Field(3, ge=1, description="frames the tall kernel spans (odd)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    harmonics: int = Field(6, ge=1, description="input channels: the HCQT view's harmonics (features.hcqt.harmonics)")


def salience_net(task: str, grid: sal.Grid, n_bins: int, params: PitchModel):
    """The salience network of ``params`` for an HCQT view of ``n_bins`` bins (the output grid's)."""
    from .pitch_net import SalienceNet

    if n_bins != grid.n_bins:
        raise ValueError(f"the {task} model's output grid has {grid.n_bins} bins; the HCQT view has {n_bins}")
    return SalienceNet(
        in_channels=params.harmonics,
        channels=list(params.channels),
        tall_channels=params.tall_channels,
        tall_bins=params.tall_bins,
        tall_frames=params.tall_frames,
        dropout=params.dropout,
    )


def predict_salience(model, features: np.ndarray, device) -> np.ndarray:
    """(T, bins) salience of a whole track, in chunks of frames (overlapping by the receptive field)."""
    import torch

    x = np.asarray(features, np.float32)  # (H, T, F)
    T = x.shape[1]
    chunk, pad = 2048, 16
    out = np.zeros((T, x.shape[2]), np.float32)
    with torch.no_grad():
        for a in range(0, T, chunk):
            lo, hi = max(0, a - pad), min(T, a + chunk + pad)
            y = torch.sigmoid(model(torch.from_numpy(x[:, lo:hi])[None].to(device)).float())[0].cpu().numpy()
            out[a : min(T, a + chunk)] = y[a - lo : a - lo + min(chunk, T - a)]
    return out


class PitchDecoding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voicing: Literal["peak", "classifier"] = Field(
        "peak",
        description="peak: voiced where the frame's peak salience reaches the threshold. classifier: a logistic "
        "voicing classifier on the salience map (level, its rise and decay around the frame, spread, the track's "
        "level and register) fitted on the validation split after training; on the demo it fires less on note "
        "tails and accompaniment (voicing false alarm 0.54 -> 0.36, overall accuracy 0.800 -> 0.809), on real "
        "excerpts it did not beat peak (docs/experiments/2026-12-07-pitch-voicing.md). A checkpoint tuned "
        "before it has none and decodes with peak",
        json_schema_extra=since("peak"),  # peak decodes as before: existing evaluations stay done
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="voicing threshold on the frame's peak salience; set, the peak decides whatever voicing says; "
        "null: the one tuned on the validation split (for voicing: peak)",
    )
    viterbi: bool = Field(
        True, description="pitch from a Viterbi path through the salience (continuity prior) rather than each frame's argmax"
    )
    smoothing_cents: float = Field(
        40.0, gt=0, le=600, description="with viterbi: standard deviation of the pitch change between frames"
    )


class PitchTargets(Targets):
    """f0 in Hz per HCQT frame; it scales by 2^(n/12) under a shift of n semitones."""

    namespace = "pitch_contour"
    arrays = (F0,)
    moves = "pitch_contour"

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return encode(jam, frame_times)

    def transpose(self, targets: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """f0 scaled by 2^(n/12); unvoiced frames (0) and padding (< 0) stay as they are."""
        f0 = targets[F0]
        scaled = np.where(f0 > 0, f0 * np.float32(2.0 ** (n / 12)), f0)
        return {**targets, F0: scaled.astype(f0.dtype)}

    def transpose_annotation(self, annotation, n: int):
        return scale_contour(annotation, n)


class PitchNetwork(Network):
    Params = PitchModel
    metric_name = "raw_pitch_accuracy"  # frames whose argmax is within 50 cents of a voiced reference (no threshold)
    grid = sal.Grid()
    sigma_bins = 1.0  # the target Gaussian's standard deviation: 1 bin = 20 cents (the paper's)

    def on_device(self, batch):
        return {**batch, SALIENCE: sal.salience_target_torch(batch[F0], self.grid, self.sigma_bins)}

    def build(self, n_bins: int, params: PitchModel):
        return salience_net("pitch", self.grid, n_bins, params)

    def loss(self, outputs, batch):
        from .pitch_net import masked_bce

        total = masked_bce(outputs, batch[SALIENCE], batch[F0])
        return total, {"bce": total.detach()}

    def metric(self, outputs, batch) -> tuple[float, float]:
        """Raw pitch accuracy of the argmax bins over the voiced frames: threshold-free, so it
        tracks learning before the voicing threshold is tuned (after training)."""
        import torch

        f0 = batch[F0].float()
        with torch.no_grad():
            arg = outputs.float().argmax(dim=-1)
            hz = self.grid.fmin * 2.0 ** (arg.float() / self.grid.bins_per_octave)
            voiced = f0 > 0
            cents = (1200.0 * torch.log2(hz / f0.clamp_min(1e-6))).abs()
        return float((voiced & (cents < 50)).sum()), float(voiced.sum())


class PitchDecoder(Decoder):
    DecodeParams = PitchDecoding
    grid = sal.Grid()

    def tune(self, model, batches, device) -> dict[str, Any]:
        """On the validation batches: the peak voicing threshold with the best frame overall accuracy,
        and the voicing classifier (``salience.tune_voicing``) fitted on the whole tracks the batches'
        consecutive patches make (``salience.validation_tracks``)."""
        import torch

        outcomes = []
        model.eval()

        def rows():  # one patch at a time: the classifier's fit holds a whole track, never the split
            with torch.no_grad():
                for batch in batches:
                    s = torch.sigmoid(model(batch[FEATURE].to(device)).float()).cpu().numpy()
                    f0 = batch[F0].cpu().numpy()
                    for i in range(s.shape[0]):
                        peak, hz = sal.peak_frequency(s[i], self.grid)
                        outcomes.append(sal.frame_outcomes(peak, hz, f0[i]))
                        yield s[i], f0[i]

        try:
            voicing, voicing_accuracy = sal.tune_voicing(sal.validation_tracks(rows()), self.grid)
        except ValueError:  # validation frames all voiced (or none): nothing to tell apart; peak decodes
            voicing = None
        threshold, accuracy = sal.tune_threshold(outcomes)
        tuned: dict[str, Any] = {"threshold": threshold, "val_overall_accuracy": accuracy}
        if voicing is None:
            return tuned
        return {**tuned, "voicing": voicing, "val_overall_accuracy_voicing": voicing_accuracy}

    def predict(self, model, features: np.ndarray, device) -> np.ndarray:
        return predict_salience(model, features, device)

    def decode(self, prediction, frame_times, duration, state: Mapping[str, Any], options: PitchDecoding):
        threshold = options.threshold or float(state.get("threshold", 0.5))
        sigma = options.smoothing_cents / self.grid.cents_per_bin if options.viterbi else None
        voicing = state.get("voicing") if options.voicing == "classifier" and options.threshold is None else None
        hz, voiced = sal.decode_f0(prediction, threshold, self.grid, viterbi_sigma_bins=sigma, voicing=voicing)
        return sal.contour_annotation(frame_times, hz, voiced, duration)

    def describe(self, annotation) -> str:
        times, hz = sal.contour_arrays(annotation)
        voiced = hz > 0
        if not len(hz):
            return "no frames"
        median = f", median {np.median(hz[voiced]):.0f} Hz" if voiced.any() else ""
        return f"{len(hz)} frames, {voiced.mean():.0%} voiced{median}"


class PitchScorer(Scorer):
    metrics = sal.METRICS
    score_columns = ("OA", "RPA", "RCA", "VR", "VFA")
    grid = sal.Grid()

    def score(self, ref, est) -> Scores:
        rt, rf = sal.contour_arrays(ref)
        et, ef = sal.contour_arrays(est)
        return sal.melody_scores(rt, rf, et, ef)

    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        from .figures import plot_salience

        plot_salience(path, prediction, frame_rate, self.grid, [("reference", ref), ("estimate", est)], title)


class Pyin(Baseline):
    name = "pyin"

    def run(self, audio_path: str, prep, duration: float):
        """``librosa.pyin`` over the whole track (C2..C7, hop 256 at 22050 Hz), unvoiced frames
        keeping their pitch guess as the model's do. Its pitch bins are 20 cents (``resolution``
        0.2; librosa's default 0.1 makes the Viterbi pass 5x slower for nothing a 50-cent
        tolerance can see)."""
        import librosa

        from mirpipe.audio.io import load_mono

        sr, hop = 22050, 256
        y, _ = load_mono(audio_path, sr, channel=prep.channel)
        f0, voiced, _ = librosa.pyin(
            y,
            fmin=float(librosa.note_to_hz("C2")),
            fmax=float(librosa.note_to_hz("C7")),
            sr=sr,
            frame_length=2048,
            hop_length=hop,
            fill_na=None,
            resolution=0.2,
        )
        times = librosa.times_like(f0, sr=sr, hop_length=hop)
        return sal.contour_annotation(times, np.nan_to_num(f0), voiced & np.isfinite(f0), duration)


@TASKS.register
class PitchTask(Task):
    """Melody f0; the store keeps f0 per frame, the salience target is built when sampling."""

    name = "pitch"
    feature = FEATURE  # f0 lives on the harmonic CQT's frame grid (hop 256)
    targets = PitchTargets()
    network = PitchNetwork()
    decoder = PitchDecoder()
    scorer = PitchScorer()
    baseline = Pyin()
