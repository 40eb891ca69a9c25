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
from collections.abc import Mapping
from copy import copy, deepcopy

import jams
import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # muda imports pkg_resources
    import muda
    from muda.deformers import PitchShift

from mirpipe.annotations.transpose import UNCLAIMED, Transposer
from mirpipe.audio.pitch_shift import pitch_shift


class JointPitchShift(PitchShift):
    """Integer pitch shifts applied exactly to the namespaces its ``transposers`` name (set after
    construction, so muda's serialized parameters stay n_semitones and backend)."""

    def __init__(self, n_semitones: int | list[int] = 0, backend: str = "librosa") -> None:
        PitchShift.__init__(self, n_semitones=n_semitones)
        self.backend = backend
        self.dispatch.clear()
        self.transposers: Mapping[str, Transposer] = dict(UNCLAIMED)

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
        serializes every observation of every annotation), and the data of an annotation a
        transposer rewrites is not deep-copied first (a 10 ms pitch contour dominated the copy).
        Each annotation moves by the first pattern it matches."""
        handlers = {}
        for ann in jam.annotations:
            pattern = next((pat for pat in self.transposers if re.fullmatch(pat, ann.namespace)), None)
            if pattern is not None:
                handlers[id(ann)] = self.transposers[pattern]
        # the rewritten annotations' data is shared with the source in the copy; each transposer
        # returns a new annotation whose data replaces it, never touching the source's observations
        memo = {id(ann.data): ann.data for ann in jam.annotations if id(ann) in handlers}
        jam_w = deepcopy(jam, memo)
        jam_w.sandbox.muda["history"].append({"transformer": self.__serialize__, "state": state})
        self.audio(jam_w.sandbox.muda, state)
        for ann_src, ann in zip(jam.annotations, jam_w.annotations):
            if id(ann_src) in handlers:
                ann.data = handlers[id(ann_src)](ann, state["n_semitones"]).data
        return jam_w


def deform(
    jam: jams.JAMS,
    shifts: list[int],
    backend: str,
    audio: tuple[np.ndarray, int] | None = None,
    transposers: Mapping[str, Transposer] | None = None,
):
    """Yield (n_semitones, deformed JAMS, shifted audio or None) for each shift.

    The JAMS carries muda's deformation history; the audio is shifted only when given.
    ``transposers`` ({namespace regex: transposer}, first match wins) say how annotations move
    (``mirpipe.models.task.annotation_transposers()``: the tasks' own, then ``UNCLAIMED``); None:
    ``UNCLAIMED`` alone. Annotations matching none stay as they are.
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
        shifter = JointPitchShift(n_semitones=[n], backend=backend)
        if transposers is not None:
            shifter.transposers = dict(transposers)
        out = next(shifter.transform(jam))
        y = None
        box = out.sandbox.muda
        if audio is not None:
            y = box._audio["y"]
            delattr(box, "_audio")
        yield n, out, y
