"""Instrument task on a pretrained embedding: ``instrument_embed``.

The ``instrument`` task's labels, vocabulary, heads, loss, decoding and scores, on another
feature: musicnn's pooled mid-end features by default, or its 200-d penultimate layer
(``features.musicnn``, a tagger trained on real recordings; ``mirpipe.storage.musicnn``),
3.9 frames/s, instead of the HCQT. The network is a
small head trained from streamed patches of embedding frames (``EmbedHead``): a 1-D conv over
time, mean and max pooling, the softmax (solo clips) and sigmoid (mixture tags) heads.

Opt-in (``Task.opt_in``): the default ``features.tasks`` leave it out, since its feature needs the
musicnn checkpoint (``pip install --no-deps musicnn==0.1.0``). Name it in ``features.tasks`` and
``train.tasks`` to train it; ``predict`` computes the same feature from the exported settings.
Its targets are ``targets/instrument_embed_labels`` on the embedding's frame grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .instrument import InstrumentDecoder, InstrumentNetwork, InstrumentScorer, InstrumentTargets, InstrumentVocabulary
from .task import TASKS, Task

EMBED_LABELS = "targets/instrument_embed_labels"


class EmbedHeadModel(BaseModel):
    """The head's size and the patches ``predict`` cuts (set ``patch_frames`` as training's)."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(128, ge=4, description="channels of the 1-D conv and units under the heads")
    kernel: int = Field(3, ge=1, description="embedding frames the conv spans (3.9 frames/s at the default hop)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    input_dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="training: embedding values zeroed at random (after batch norm)"
    )
    patch_frames: int = Field(
        8, ge=1, description="embedding frames of the patches predict cuts (8: ~2.8 s of audio at hop 0.256 s, 1 s windows)"
    )


class EmbedTargets(InstrumentTargets):
    """The instrument task's label ids, on the embedding's frame grid (their own array name)."""

    arrays = (EMBED_LABELS,)

    def encode(self, jam, frame_times: np.ndarray) -> dict[str, np.ndarray]:
        return {EMBED_LABELS.removeprefix("targets/"): super().encode(jam, frame_times)["instrument_labels"]}


class EmbedNetwork(InstrumentNetwork):
    Params = EmbedHeadModel  # type: ignore[assignment]  # the head's own settings
    labels = EMBED_LABELS

    def build(self, n_bins: int, params: EmbedHeadModel):  # type: ignore[override]
        from .instrument_embed_net import EmbedHead

        net = EmbedHead(n_bins, len(self._vocab().classes), params.hidden, params.kernel, params.dropout, params.input_dropout)
        net.patch_frames = params.patch_frames
        return net


class EmbedDecoder(InstrumentDecoder):
    """The instrument decoder on patches of at most the track's frames: the head pools over time,
    so a track shorter than a patch is read whole instead of padded (an embedding has no silence
    value; a 1 s excerpt is 4 frames)."""

    def patch_frames(self, model, n_frames: int) -> int:
        return max(1, min(int(getattr(model, "patch_frames", 8)), n_frames))


class EmbedScorer(InstrumentScorer):
    def plot(self, path: Path, features: np.ndarray, frame_rate: float, ref, est, title: str, prediction: np.ndarray) -> None:
        from .figures import plot_segments

        rows = [("reference", ref), ("estimate", est)]
        plot_segments(path, features[0], frame_rate, rows, title, ylabel="embedding dimension")


@TASKS.register
class InstrumentEmbedTask(Task):
    """Instruments from a pretrained tagger's embedding (musicnn, trained on real recordings)."""

    name = "instrument_embed"
    feature = "musicnn"
    opt_in = True
    labels_of = "instrument"  # the instrument task's classes, aliases (ingest.vocabularies.instrument) and counts
    targets = EmbedTargets()
    network = EmbedNetwork()
    decoder = EmbedDecoder()
    scorer = EmbedScorer()
    vocabulary = InstrumentVocabulary()
