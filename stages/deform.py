"""Joint pitch shifting of audio and annotations, built on muda.

muda 0.4.1's ``PitchShift`` writes chord labels with Unicode sharps (``D♯:maj``)
that neither mir_eval nor the JAMS chord schema accept, leaves ``note_midi`` and
``note_hz`` alone, and estimates tuning from audio it needs in memory. This
deformer keeps muda's machinery (states, deep-copied JAMS, the history in
``sandbox.muda``) and replaces the namespace handlers with exact ones. Audio is
shifted only when it was packed into the JAMS; otherwise the
history records what was done.
"""

from __future__ import annotations

import re
import warnings
from copy import deepcopy

import jams
import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # muda imports pkg_resources
    import muda
    from muda.deformers import PitchShift

from mirpipe.models.chord import transpose_label

from .pitch_shift import pitch_shift


class JointPitchShift(PitchShift):
    """Integer pitch shifts applied exactly to chord, key_mode, pitch and note namespaces."""

    def __init__(self, n_semitones=0, backend="librosa"):
        PitchShift.__init__(self, n_semitones=n_semitones)
        self.backend = backend
        self.dispatch.clear()
        self._register("chord|chord_harte|key_mode", self.deform_label)
        self._register("pitch_contour", self.deform_contour)
        self._register("pitch_hz|note_hz", self.deform_hz)
        self._register("pitch_midi|note_midi", self.deform_midi)

    def states(self, jam):
        for semitones in self.n_semitones:
            # Tuning is not estimated: integer shifts move labels by exactly n.
            yield dict(tuning=0.0, n_semitones=int(semitones))

    def audio(self, mudabox, state):
        audio = getattr(mudabox, "_audio", None)
        if audio is not None:
            audio["y"] = pitch_shift(audio["y"], audio["sr"], state["n_semitones"], self.backend)

    def _transform(self, jam, state):
        """muda's ``_transform``, matching namespaces directly: ``JAMS.search`` serializes
        every observation of every annotation and dominated the augment stage."""
        jam_w = deepcopy(jam)
        jam_w.sandbox.muda["history"].append({"transformer": self.__serialize__, "state": state})
        self.audio(jam_w.sandbox.muda, state)
        for pattern, function_name in self.dispatch.items():
            for ann in jam_w.annotations:
                if re.fullmatch(pattern, ann.namespace):
                    getattr(self, function_name)(ann, state)
        return jam_w

    @staticmethod
    def deform_label(annotation, state):
        for obs in annotation.pop_data():
            annotation.append(
                time=obs.time,
                duration=obs.duration,
                confidence=obs.confidence,
                value=transpose_label(obs.value, state["n_semitones"]),
            )


def deform(jam: jams.JAMS, shifts: list[int], backend: str, audio: tuple[np.ndarray, int] | None = None):
    """Yield (n_semitones, deformed JAMS, shifted audio or None) for each shift.

    The JAMS carries muda's deformation history; the audio is shifted only when given.
    """
    jam = deepcopy(jam)
    if audio is not None:
        muda.jam_pack(jam, _audio=dict(y=audio[0], sr=audio[1]))
    else:
        muda.jam_pack(jam)
    for n in shifts:
        out = next(JointPitchShift(n_semitones=[n], backend=backend).transform(jam))
        y = None
        box = out.sandbox.muda
        if audio is not None:
            y = box._audio["y"]
            delattr(box, "_audio")
        yield n, out, y
