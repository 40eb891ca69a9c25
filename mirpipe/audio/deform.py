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
from copy import copy, deepcopy

import jams
import numpy as np
from jams.core import Observation

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # muda imports pkg_resources
    import muda
    from muda.deformers import PitchShift

from mirpipe.annotations.namespaces import transpose_label

from mirpipe.audio.pitch_shift import pitch_shift


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
        """muda's ``_transform``, minus its costs: namespaces are matched directly (``JAMS.search``
        serializes every observation of every annotation), and the data of an annotation a handler
        rewrites is not deep-copied first (a 10 ms pitch contour dominated the copy); handlers build
        their new observations in one pass instead of appending them one by one."""
        handlers = {}
        for ann in jam.annotations:
            for pattern, function_name in self.dispatch.items():
                if re.fullmatch(pattern, ann.namespace):
                    handlers.setdefault(id(ann), []).append(function_name)
        # the rewritten annotations' data is shared with the source in the copy; each handler
        # replaces it (``pop_data``) without touching the source's observations
        memo = {id(ann.data): ann.data for ann in jam.annotations if id(ann) in handlers}
        jam_w = deepcopy(jam, memo)
        jam_w.sandbox.muda["history"].append({"transformer": self.__serialize__, "state": state})
        self.audio(jam_w.sandbox.muda, state)
        for pattern, function_name in self.dispatch.items():  # muda's order: per pattern, every match
            for ann_src, ann in zip(jam.annotations, jam_w.annotations):
                if function_name in handlers.get(id(ann_src), ()):
                    getattr(self, function_name)(ann, state)
        return jam_w

    @staticmethod
    def _rewrite(annotation, value_of):
        """Replace every observation's value by ``value_of(value)`` (times, durations, confidences kept)."""
        old = annotation.pop_data()
        annotation.data.update([Observation(o.time, o.duration, value_of(o.value), o.confidence) for o in old])

    @staticmethod
    def deform_label(annotation, state):
        n = state["n_semitones"]
        JointPitchShift._rewrite(annotation, lambda v: transpose_label(v, n))

    @staticmethod
    def deform_contour(annotation, state):
        scale = 2.0 ** (state["n_semitones"] / 12.0)
        JointPitchShift._rewrite(
            annotation, lambda v: {"index": v["index"], "frequency": scale * v["frequency"], "voiced": v["voiced"]})

    @staticmethod
    def deform_hz(annotation, state):
        scale = 2.0 ** (state["n_semitones"] / 12.0)
        JointPitchShift._rewrite(annotation, lambda v: scale * v)

    @staticmethod
    def deform_midi(annotation, state):
        n = state["n_semitones"]
        JointPitchShift._rewrite(annotation, lambda v: v + n)


def deform(jam: jams.JAMS, shifts: list[int], backend: str, audio: tuple[np.ndarray, int] | None = None):
    """Yield (n_semitones, deformed JAMS, shifted audio or None) for each shift.

    The JAMS carries muda's deformation history; the audio is shifted only when given.
    """
    # the source's annotations are shared, never modified (``_transform`` copies what it keeps and
    # rebuilds what it rewrites); only the sandbox that muda writes to is the source's no more
    jam = copy(jam)
    jam.sandbox = deepcopy(jam.sandbox)
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
