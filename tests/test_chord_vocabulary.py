import jams
import mir_eval
import numpy as np
import pytest

from mirpipe.annotations.namespaces import transpose_label
from mirpipe.models import chord


def test_every_class_round_trips_through_a_label_mir_eval_accepts():
    for tag in range(chord.N_TAGS):
        label = chord.tag_to_label(tag)
        mir_eval.chord.encode(label)  # raises on labels mir_eval rejects
        assert chord.encode_label(label)[3] == tag


def test_inversions_keep_the_class_and_set_the_bass():
    root, pitches, bass, tag = chord.encode_label("A:min7/b7")
    assert (root, bass, tag) == (9, 7, chord.encode_label("A:min7")[3])
    assert set(np.flatnonzero(pitches)) == {9, 0, 4, 7}


def test_out_of_vocabulary_and_no_chord():
    assert chord.encode_label("C:maj(9)")[3] == chord.TAG_X
    root, pitches, bass, tag = chord.encode_label("N")
    assert (root, bass, tag) == (chord.NO_ROOT, chord.NO_ROOT, chord.TAG_N) and pitches.sum() == 0
    root, pitches, bass, tag = chord.encode_label("X")
    assert (root, bass, tag) == (chord.IGNORE, chord.IGNORE, chord.TAG_X) and (pitches == chord.IGNORE).all()


@pytest.mark.parametrize(
    "label,n,expected", [("Bb:min7/b3", 3, "C#:min7/b3"), ("C:maj", -1, "B:maj"), ("N", 5, "N"), ("F#:major", 6, "C:major")]
)
def test_transpose_label(label, n, expected):
    assert transpose_label(label, n) == expected


def test_frame_targets_follow_the_annotation():
    jam = jams.JAMS()
    jam.file_metadata.duration = 4.0
    ann = jams.Annotation("chord")
    ann.append(time=0.0, duration=1.0, value="C:maj")
    ann.append(time=1.0, duration=2.0, value="G:7/3")
    jam.annotations.append(ann)
    t = np.array([0.0, 0.5, 1.0, 2.9, 3.5])
    out = chord.encode(jam, t)
    assert out["chord_root"].tolist() == [0, 0, 7, 7, chord.NO_ROOT]
    assert out["chord_bass"].tolist() == [0, 0, 11, 11, chord.NO_ROOT]
    assert out["chord_tag"].tolist()[-1] == chord.TAG_N
    assert out["chord_pitches"].shape == (5, 12)


def test_track_without_chords_is_ignored_not_no_chord():
    jam = jams.JAMS()
    out = chord.encode(jam, np.arange(3.0))
    assert (out["chord_tag"] == chord.IGNORE).all() and (out["chord_root"] == chord.IGNORE).all()
