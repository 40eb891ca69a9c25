"""Sung bends (``synthesize.sung_bends``): the leads of the families that bend glide, scoop and
sing vibrato as singers do; the notes stay, the labels follow the bends, and off the corpus is the
one of before."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from mirpipe.demo import labels, soundfont
from mirpipe.demo.arrange import bends_like_a_singer, compose_mixture
from mirpipe.demo.families import FAMILIES
from mirpipe.demo.stage import StageContext, Synthesize, SynthesizeParams

SR = 22050
needs_soundfonts = pytest.mark.skipif(soundfont.available(["FluidR3_GM.sf2"]) is not None, reason="sampled renderer unavailable")


def _bends(perf) -> int:
    return sum(e.kind == "bend" and e.channel == perf.melody_channel for e in perf.events)


def _semitone_deviation(perf) -> np.ndarray:
    """Cents between the labelled lead f0 and the nearest 12-TET pitch, on its voiced frames."""
    _, hz, voiced = labels.contour(perf)
    m = 12 * np.log2(hz[voiced] / 440.0) + 69
    return 100 * np.abs(m - np.round(m))


def test_sung_bends_keep_every_note_and_bend_the_leads_that_bend():
    """Same notes (onsets, keys), same band; the labelled f0 of the leads of bending families (and
    voices, whose GM presets were played straight) leaves the semitone grid more often."""
    bent_leads = 0
    for i in range(16):
        plain = compose_mixture(i, 0, SR, 15, 25)
        sung = compose_mixture(i, 0, SR, 15, 25, sung=True)
        assert [(n.start, n.key) for n in plain.melody] == [(n.start, n.key) for n in sung.melody]
        band = [e for e in plain.events if e.channel != plain.melody_channel]
        assert band == [e for e in sung.events if e.channel != sung.melody_channel]
        assert plain.chords == sung.chords and plain.tags == sung.tags
        (lead,) = [p.tag for p in sung.parts if p.role == "melody"]
        if not bends_like_a_singer(FAMILIES[lead]):
            assert sung.events == plain.events  # a piano does not bend
            continue
        bent_leads += 1
        far = np.mean(_semitone_deviation(sung) > 30)
        assert far > np.mean(_semitone_deviation(plain) > 30), (i, lead)
    assert bent_leads >= 6


def test_voice_leads_bend_only_when_sung():
    """The GM voice presets played straight before; sung, they glide and scoop."""
    voice = FAMILIES["voice"]
    assert not voice.vibrato and bends_like_a_singer(voice)
    found = 0
    for i in range(200):
        plain = compose_mixture(i, 3, SR, 15, 20)
        if [p.tag for p in plain.parts if p.role == "melody"] != ["voice"]:
            continue
        sung = compose_mixture(i, 3, SR, 15, 20, sung=True)
        assert np.all(_semitone_deviation(plain) < 1)
        assert np.mean(_semitone_deviation(sung) > 30) > 0.05
        found += 1
        if found == 2:
            break
    assert found == 2


def test_off_is_the_corpus_of_before_and_on_renders_again():
    """Off, the synthesize fingerprint has no new key (existing corpora are not re-rendered); on, it changes."""
    ctx = lambda p: StageContext(workdir=None, params={"synthesize": p})  # noqa: E731
    off, on = SynthesizeParams(), SynthesizeParams(sung_bends=True)
    fp_off = Synthesize().fingerprint_params(ctx(off))
    assert "sung_bends" not in fp_off
    assert Synthesize().fingerprint_params(ctx(on)) != fp_off


@needs_soundfonts
def test_the_sung_lead_sounds_its_labelled_contour():
    """pYIN on rendered sung solo tracks (the lead alone) agrees with the labelled f0 (median error
    within 25 cents, most frames within 50), where the labels are off the semitone grid on a good
    share of frames."""
    errors, bent, index = [], [], 0
    while len(errors) < 3:
        perf = compose_mixture(index, 0, SR, 4, 8, solo=True, sung=True)
        index += 1
        (lead,) = [p.tag for p in perf.parts if p.role == "melody"]
        if not bends_like_a_singer(FAMILIES[lead]):
            continue
        y, _ = soundfont.render(perf, "FluidR3_GM.sf2", SR)
        sounding = labels.sounding_offsets(perf, "FluidR3_GM.sf2", SR)
        times, hz, voiced = labels.contour(perf, sounding=sounding)
        f0, flags, _ = librosa.pyin(y, fmin=80, fmax=2000, sr=SR, hop_length=220, frame_length=2048)
        ft = librosa.times_like(f0, sr=SR, hop_length=220)
        est = np.interp(times, ft, np.nan_to_num(f0))
        both = voiced & (np.interp(times, ft, flags.astype(float)) > 0.5) & (est > 0)
        assert both.sum() > 0.8 * voiced.sum(), lead
        errors.append(np.abs(1200 * np.log2(est[both] / hz[both])))
        m = 12 * np.log2(hz[voiced] / 440.0) + 69
        bent.append(100 * np.abs(m - np.round(m)))
    err, dev = np.concatenate(errors), np.concatenate(bent)
    assert np.median(err) < 25 and np.mean(err < 50) > 0.75
    assert np.mean(dev > 30) > 0.1  # not a check on straight notes
