"""Joint deformation: every variant validates, every label parses, every pitched namespace moves exactly."""

import shutil

import jams
import mir_eval
import numpy as np
import pytest

from mirpipe.audio.deform import deform
from mirpipe.audio.pitch_shift import PITCH_SHIFTERS, pitch_shift
from mirpipe.demo.track import annotate, compose
from mirpipe.models.task import annotation_transposers

SHIFTS = list(range(-6, 7))


@pytest.fixture(scope="module")
def source_jam():
    jam = annotate(compose(0, 0, False, 20, 30), "demo-0000", solo=False)
    hz = jams.Annotation("note_hz", time=0, duration=jam.file_metadata.duration)
    hz.append(time=1.0, duration=0.5, value=440.0)
    jam.annotations.append(hz)
    return jam


def _values(jam, ns):
    return [o.value for o in jam.search(namespace=ns)[0].data]


def test_thirteen_variants_validate_and_parse(source_jam, tmp_path):
    outputs = list(deform(source_jam, SHIFTS, "librosa", transposers=annotation_transposers()))
    assert [n for n, _, _ in outputs] == SHIFTS
    for n, out, y in outputs:
        assert y is None  # no audio unless asked
        path = tmp_path / f"{n:+d}.jamz"
        out.save(str(path), strict=True, fmt="jamz")
        back = jams.load(str(path), validate=True, strict=True)
        for label in _values(back, "chord"):
            assert "♯" not in label and "♭" not in label
            mir_eval.chord.encode(label)
        assert back.sandbox.muda["history"][0]["state"]["n_semitones"] == n


def test_every_pitched_namespace_moves_exactly(source_jam):
    orig_chords = _values(source_jam, "chord")
    orig_contour = _values(source_jam, "pitch_contour")
    orig_notes = _values(source_jam, "note_midi")
    for n, out, _ in deform(source_jam, SHIFTS, "librosa", transposers=annotation_transposers()):
        for a, b in zip(orig_chords, _values(out, "chord")):
            if a == "N":
                assert b == "N"
                continue
            ra, bitmap_a, bass_a = mir_eval.chord.encode(a)
            rb, bitmap_b, bass_b = mir_eval.chord.encode(b)
            assert rb == (ra + n) % 12 and np.array_equal(bitmap_a, bitmap_b) and bass_a == bass_b
        key_a, key_b = _values(source_jam, "key_mode")[0], _values(out, "key_mode")[0]
        assert (
            mir_eval.chord.pitch_class_to_semitone(key_b.split(":")[0])
            == (mir_eval.chord.pitch_class_to_semitone(key_a.split(":")[0]) + n) % 12
        )
        assert key_a.split(":")[1] == key_b.split(":")[1]
        for a, b in zip(orig_contour, _values(out, "pitch_contour")):
            assert b["voiced"] == a["voiced"]
            assert b["frequency"] == pytest.approx(a["frequency"] * 2 ** (n / 12))
        assert _values(out, "note_midi") == [v + n for v in orig_notes]
        assert _values(out, "note_hz")[0] == pytest.approx(440.0 * 2 ** (n / 12))
        assert _values(out, "tag_open") == _values(source_jam, "tag_open")
        history = out.sandbox.muda.history
        assert len(history) == 1 and history[0]["state"]["n_semitones"] == n


def test_keep_audio_shifts_the_audio_too(source_jam):
    y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    ((n, out, shifted),) = deform(source_jam, [2], "librosa", audio=(y, 22050), transposers=annotation_transposers())
    assert shifted.shape == y.shape and not np.allclose(shifted, y)
    assert not hasattr(out.sandbox.muda, "_audio")


def _peak_hz(y, sr):
    """Frequency of the strongest spectral peak, refined by parabolic interpolation."""
    y = y[sr // 4 : -sr // 4]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=8 * len(y)))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / (8 * len(y))


@pytest.mark.parametrize("backend", PITCH_SHIFTERS.names())
@pytest.mark.parametrize("n", [-6, -1, 4])
def test_pitch_shift_backends_land_within_five_cents(backend, n):
    if backend == "rubberband" and shutil.which("rubberband") is None:
        pytest.fail("rubberband CLI missing: `make install` installs Debian package rubberband-cli")
    sr = 22050
    y = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(2 * sr) / sr)).astype(np.float32)
    out = pitch_shift(y, sr, n, backend)
    assert len(out) == len(y)
    cents = 1200 * np.log2(_peak_hz(out, sr) / (440.0 * 2 ** (n / 12)))
    assert abs(cents) < 5, f"{backend} {n:+d}: {cents:.2f} cents off"
