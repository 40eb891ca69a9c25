"""The band mixtures' leads as songs have them: phrased (``synthesize.lead_rests``: the lead rests
between phrases while the band plays on; the band, and the key and onset of every kept note, are those of the unphrased
lead, the melody is unvoiced and the lead's tag absent in the rests) and low (``synthesize.lead_low``:
leads among the comping, where male voices and tenor saxophones sing). Off, the corpus is the one
of before."""

from __future__ import annotations

import numpy as np
import pytest

from mirpipe.demo import labels, soundfont
from mirpipe.demo.arrange import REST_BEATS, compose_mixture
from mirpipe.demo.families import FAMILIES
from mirpipe.demo.stage import StageContext, Synthesize, SynthesizeParams

SR = 22050
needs_soundfonts = pytest.mark.skipif(soundfont.available(["FluidR3_GM.sf2"]) is not None, reason="sampled renderer unavailable")


def _lead_tag(perf) -> str:
    (tag,) = [p.tag for p in perf.parts if p.role == "melody"]
    return tag


def _rest_windows(plain, phrased, min_s: float) -> list[tuple[float, float]]:
    """Stretches of at least ``min_s`` in which the phrased lead plays no note and the plain one does."""
    ends = [0.0] + [n.end for n in phrased.melody]
    starts = [n.start for n in phrased.melody] + [phrased.duration]
    gaps = [(e, s) for e, s in zip(ends, starts) if s - e >= min_s]
    return [(e, s) for e, s in gaps if any(e <= n.start < s for n in plain.melody)]


def test_phrased_leads_keep_the_band_and_a_subset_of_the_notes():
    voiced_plain, voiced_phrased, rested = [], [], 0
    for i in range(16):
        plain = compose_mixture(i, 0, SR, 15, 25)
        phrased = compose_mixture(i, 0, SR, 15, 25, phrased=True)
        band = [e for e in plain.events if e.channel != plain.melody_channel]
        assert band == [e for e in phrased.events if e.channel != phrased.melody_channel]
        assert plain.chords == phrased.chords and plain.duration == phrased.duration
        onsets = {(n.start, n.key) for n in plain.melody}
        assert {(n.start, n.key) for n in phrased.melody} <= onsets  # kept notes start where they did
        assert len(phrased.melody) < len(plain.melody)
        # every note stops at or before the plain one's end: a rest cuts a note, it never holds one on
        plain_end = {(n.start, n.key): n.end for n in plain.melody}
        assert all(n.end <= plain_end[(n.start, n.key)] + 1e-9 for n in phrased.melody)
        beat = 60.0 / phrased.tempo
        windows = _rest_windows(plain, phrased, REST_BEATS[0] * beat * 0.85)
        rested += bool(windows)
        times, _, voiced = labels.contour(phrased)
        for w0, w1 in windows:
            assert not voiced[(times >= w0 + 0.05) & (times < w1 - 0.05)].any(), (i, w0, w1)
        voiced_plain.append(labels.contour(plain)[2].mean())
        voiced_phrased.append(voiced.mean())
    assert rested >= 12
    # the phrased lead sings about half the time, as the real melody excerpts do (the plain lead: ~90 %)
    assert np.mean(voiced_phrased) < np.mean(voiced_plain) - 0.15
    assert 0.4 < np.mean(voiced_phrased) < 0.8


def test_the_lead_tag_holds_per_phrase():
    """The lead's instrument tag spans each phrase's notes, not the rests between them."""
    for i in range(8):
        phrased = compose_mixture(i, 0, SR, 15, 25, phrased=True)
        lead = _lead_tag(phrased)
        spans = sorted((s, e) for t, s, e in phrased.tags if t == lead)
        assert len(spans) >= 2, i
        for s, e in spans:
            inside = [n for n in phrased.melody if s <= n.start < e]
            assert inside and inside[0].start == s and max(n.end for n in inside) == e
        assert sum(len([n for n in phrased.melody if s <= n.start < e]) for s, e in spans) == len(phrased.melody)
        # other parts keep their whole-track tags
        plain = compose_mixture(i, 0, SR, 15, 25)
        others = lambda p: [t for t in p.tags if t[0] != _lead_tag(p)]  # noqa: E731
        assert others(plain) == others(phrased)


def test_low_leads_reach_below_c4_within_their_family_and_keep_the_band():
    below, lowest = 0, 127
    for i in range(24):
        plain = compose_mixture(i, 0, SR, 15, 25)
        low = compose_mixture(i, 0, SR, 15, 25, lead_low=48)
        band = [e for e in plain.events if e.channel != plain.melody_channel]
        assert band == [e for e in low.events if e.channel != low.melody_channel]
        assert plain.chords == low.chords
        fam = FAMILIES[_lead_tag(low)]
        keys = [n.key for n in low.melody]
        assert min(n.key for n in plain.melody) >= 60
        assert min(keys) >= max(fam.low, 48) and max(keys) <= min(fam.high, 91)
        below += any(k < 60 for k in keys)
        lowest = min(lowest, min(keys))
    assert below >= 8 and lowest <= 52


@pytest.mark.parametrize("field,value", [("lead_rests", True), ("lead_low", 48)])
def test_off_is_the_corpus_of_before_and_on_renders_again(field, value):
    ctx = lambda p: StageContext(workdir=None, params={"synthesize": p})  # noqa: E731
    off, on = SynthesizeParams(), SynthesizeParams(**{field: value})
    fp_off = Synthesize().fingerprint_params(ctx(off))
    assert field not in fp_off
    assert Synthesize().fingerprint_params(ctx(on)) != fp_off


@needs_soundfonts
def test_the_rendered_lead_is_silent_in_its_rests():
    """The lead rendered alone falls more than 45 dB below its phrases' level in the second half of
    each rest (its release and reverb have died away by then), so the unvoiced labels there are right."""
    checked = 0
    for i in range(6):
        plain = compose_mixture(i, 0, SR, 12, 16)
        perf = compose_mixture(i, 0, SR, 12, 16, phrased=True)
        others = tuple(sorted({e.channel for e in perf.events} - {perf.melody_channel}))
        lead, _ = soundfont.render(perf, "FluidR3_GM.sf2", SR, mute=others)
        phrase_db = 10 * np.log10(np.mean(lead**2) + 1e-20)
        for w0, w1 in _rest_windows(plain, perf, 1.5):
            seg = lead[int((w0 + w1) / 2 * SR) : int((w1 - 0.05) * SR)]
            rest_db = 10 * np.log10(np.mean(seg**2) + 1e-20)
            assert rest_db < phrase_db - 45, (i, w0, w1, rest_db, phrase_db)
            checked += 1
    assert checked >= 3
