"""Chord takes (``synthesize.chord_takes``): one harmony instrument playing chords one at a time with
silence between them, as chord datasets record them; labels checked from the audio."""

from __future__ import annotations

import collections

import librosa
import numpy as np
import pytest

from mirpipe.demo import soundfont
from mirpipe.demo.arrange import TAKE_FAMILIES, compose_chord_take
from mirpipe.demo.stage import StageContext, Synthesize, SynthesizeParams, _say_numpy_lacks_soundfont_options, take_id
from mirpipe.models.chord import encode_label

SR = 22050
needs_soundfonts = pytest.mark.skipif(
    soundfont.available(["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "TimGM6mb.sf2"]) is not None,
    reason="sampled renderer unavailable",
)


def test_a_take_tiles_its_duration_with_chords_and_silences():
    kinds, qualities, inverted = collections.Counter(), set(), 0
    for i in range(30):
        perf = compose_chord_take(i, 0, SR, 15, 25)
        segs = perf.chords
        assert segs[0].start == 0 and segs[0].label == "N" and segs[-1].end == perf.duration
        assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(segs, segs[1:]))
        assert len(perf.parts) == 1 and perf.parts[0].tag in TAKE_FAMILIES and perf.melody_channel is None
        assert not any(a.label == b.label == "N" for a, b in zip(segs, segs[1:]))
        ons = [(e.time, e.a) for e in perf.events if e.kind == "on"]
        for seg in segs:
            keys = [k for t, k in ons if seg.start - 1e-9 <= t < seg.end - 1e-9]
            if seg.label == "N":
                assert not keys  # silence: nothing struck
                continue
            root, pcs, bass, _ = encode_label(seg.label)
            assert {k % 12 for k in keys} == set(np.flatnonzero(pcs)), (seg.label, keys)
            assert bass == min(keys) % 12 == seg.bass
            qualities.add(seg.label.split(":")[1].split("/")[0])
            inverted += "/" in seg.label
            kinds["chord"] += 1
        kinds["N"] += sum(s.label == "N" for s in segs)
    assert kinds["N"] > 0.3 * kinds["chord"] and len(qualities) >= 10 and inverted > 10


@needs_soundfonts
def test_the_rendered_take_sounds_its_labels_and_is_quiet_between_them():
    """The k strongest pitch classes of each chord are the label's in >= 85 % of chords; the middle
    of each silence longer than 1 s lies >= 25 dB below the take's chords."""
    exact = total = quiet = gaps = 0
    for i in range(4):
        perf = compose_chord_take(i, 1, SR, 15, 20)
        y, _ = soundfont.render(perf, "FluidR3_GM.sf2", SR)
        C = np.abs(librosa.cqt(y, sr=SR, hop_length=512, fmin=librosa.midi_to_hz(24), n_bins=180, bins_per_octave=36))[::3]
        times = librosa.frames_to_time(np.arange(C.shape[1]), sr=SR, hop_length=512)
        rms = librosa.feature.rms(y=y, hop_length=512)[0][: len(times)]
        level = 20 * np.log10(np.percentile(rms, 90) + 1e-12)
        for seg in perf.chords:
            frames = (times >= seg.start + 0.1) & (times < seg.end - 0.1)
            if seg.label == "N":
                middle = (times >= seg.start + 0.9) & (times < seg.end - 0.1)
                if middle.any():
                    gaps += 1
                    quiet += 20 * np.log10(rms[middle].mean() + 1e-12) < level - 25
                continue
            chroma = np.zeros(12)
            for b in range(C.shape[0]):
                chroma[(24 + b) % 12] += C[b, frames].mean()
            _, pcs, _, _ = encode_label(seg.label)
            exact += set(np.argsort(chroma)[-int(pcs.sum()) :]) == set(np.flatnonzero(pcs))
            total += 1
    assert total >= 20 and exact / total >= 0.85, (exact, total)
    assert gaps >= 3 and quiet == gaps, (quiet, gaps)


@needs_soundfonts
def test_take_items_are_split_like_the_rest_and_leave_the_fingerprint_alone():
    base = SynthesizeParams(tracks=2, clips_per_family=0, renderer="soundfont")
    ctx = lambda p: StageContext(workdir=None, params={"synthesize": p})  # noqa: E731
    more = base.model_copy(update={"chord_takes": 40})
    takes = [it for it in Synthesize().items(ctx(more), {}) if it.payload["kind"] == "take"]
    assert [it.id for it in takes] == [take_id(k) for k in range(40)]
    assert collections.Counter(it.payload["split"] for it in takes) == {"train": 28, "val": 6, "test": 6}
    test_fonts = {it.payload["soundfont"] for it in takes if it.payload["split"] == "test"}
    assert test_fonts == set(base.soundfonts["test"])
    assert Synthesize().fingerprint_params(ctx(more)) == Synthesize().fingerprint_params(ctx(base))


def test_the_numpy_renderer_says_it_makes_no_takes_or_stems(capsys):
    _say_numpy_lacks_soundfont_options.cache_clear()  # said once per process
    p = SynthesizeParams(tracks=3, clips_per_family=0, renderer="numpy", chord_takes=5, stem_fraction=1.0)
    items = Synthesize().items(StageContext(workdir=None, params={"synthesize": p}), {})
    assert len(items) == 3 and {it.payload["kind"] for it in items} == {"mixture"}
    assert (
        "chord_takes, stem_fraction, sung_bends, lead_rests, lead_low and voice_clips need the soundfont renderer"
        in capsys.readouterr().err
    )
