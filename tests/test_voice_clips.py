"""Voice clips (``synthesize.voice_clips``): solo clips of a singing voice, sung with a singer's
bends and labelled exactly; they only add clips (every other item stays as it was), and the sample
libraries without voice recordings are not drawn for them."""

from __future__ import annotations

import numpy as np
import pytest

from mirpipe.demo import arrange, samples, soundfont
from mirpipe.demo.arrange import compose_clip
from mirpipe.demo.families import FAMILIES, SOLO_FAMILIES, clip_families
from mirpipe.demo.labels import contour
from mirpipe.demo.stage import StageContext, Synthesize, SynthesizeParams

SR = 22050
needs_soundfonts = pytest.mark.skipif(
    soundfont.available(["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "TimGM6mb.sf2"]) is not None,
    reason="sampled renderer unavailable",
)


def _ctx(p: SynthesizeParams, workdir=None) -> StageContext:
    return StageContext(workdir=workdir, params={"synthesize": p})


def _items(p: SynthesizeParams) -> dict:
    return {i.id: i.payload for i in Synthesize().items(_ctx(p), {})}


@needs_soundfonts
def test_voice_clips_only_add_clips_and_skip_libraries_without_voice():
    plain = _items(SynthesizeParams(tracks=20, clips_per_family=20, voice_clips=False))
    voiced = _items(SynthesizeParams(tracks=20, clips_per_family=20, voice_clips=True))
    added = {k: v for k, v in voiced.items() if k not in plain}
    assert all(voiced[k] == v for k, v in plain.items())  # no other item moves
    assert len(added) == 20 and {v["family"] for v in added.values()} == {"voice"}
    assert sorted(v["split"] for v in added.values()).count("test") == 3
    assert {v["split"] for v in added.values()} == {"train", "val", "test"}
    drawn = {v["soundfont"] for v in added.values()}
    assert "tonejs-instruments" not in drawn  # it has no voice recordings
    assert {v["soundfont"] for v in added.values() if v["split"] == "test"} == {"TimGM6mb.sf2"}
    assert not samples.plays("tonejs-instruments", "voice")
    # items only: a corpus with voice clips keeps every other track's stage fingerprint
    fp = [Synthesize().fingerprint_params(_ctx(SynthesizeParams(voice_clips=v))) for v in (False, True)]
    assert fp[0] == fp[1]
    assert clip_families(False) == SOLO_FAMILIES and clip_families(True)[: len(SOLO_FAMILIES)] == SOLO_FAMILIES


def test_only_voice_clips_are_sung(monkeypatch):
    """The other families' clips never draw a singer's bends (they are the clips of before); a
    voice clip bends: its labelled f0 leaves the semitone grid (scoops, glides, vibrato)."""
    for family in SOLO_FAMILIES:
        before = compose_clip(1, 0, family, SR, 3, 6)
        with monkeypatch.context() as m:
            m.setattr(arrange, "sung_bends", lambda *a, _f=family, **k: pytest.fail(f"{_f} clip sung"))
            assert compose_clip(1, 0, family, SR, 3, 6) == before
    assert not FAMILIES["voice"].vibrato  # the GM voice presets bend only when sung
    far = []
    for k in range(4):
        perf = compose_clip(k, 0, "voice", SR, 3, 6)
        assert any(e.kind == "bend" and e.channel == perf.melody_channel and e.a != 0 for e in perf.events)
        _, hz, voiced = contour(perf)
        m = 12 * np.log2(hz[voiced] / 440.0) + 69
        far.append(np.mean(100 * np.abs(m - np.round(m)) > 20))
    assert np.mean(far) > 0.2, far


@needs_soundfonts
@pytest.mark.parametrize("sf_name", ["FluidR3_GM.sf2", "TimGM6mb.sf2"])
def test_a_voice_clip_sounds_its_labelled_bends(sf_name, pyin_scores):
    """pYIN on a sung voice clip follows its contour label, bends included (raw pitch accuracy
    within 50 cents on most voiced frames), for a training and the test soundfont."""
    scores = []
    for k in range(3):
        perf = compose_clip(k, 0, "voice", SR, 3, 6)
        y, info = soundfont.render(perf, sf_name, SR)
        assert not info.missing_presets
        scores.append(pyin_scores(perf, y, FAMILIES["voice"], SR))
    rpas, cents = zip(*scores, strict=True)
    assert min(rpas) >= 0.75 and np.mean(rpas) >= 0.85 and max(cents) <= 30, (sf_name, scores)


def _freepats_voice() -> bool:
    try:
        samples.find_library("freepats", ("voice",))
    except samples.SampleLibraryUnavailable:
        return False
    return True


@pytest.mark.skipif(not _freepats_voice(), reason="freepats not installed (apt-get install freepats)")
def test_freepats_plays_a_voice_clip_that_sounds():
    perf = compose_clip(2, 0, "voice", SR, 3, 6)
    y, info = samples.render_clip(perf, "freepats", SR, (0, clip_families(True).index("voice"), 2))
    assert info.instrument == "Tone_000/053_Voice_Oohs.pat" and info.recordings
    assert np.sqrt(np.mean(y**2)) > 1e-3 and np.isfinite(y).all()


def test_on_by_default_and_the_numpy_renderer_says_so_only_when_asked(capsys):
    from mirpipe.demo.stage import _say_numpy_lacks_soundfont_options

    assert SynthesizeParams().voice_clips
    for asked, said in (
        (SynthesizeParams(tracks=2, renderer="numpy"), False),
        (SynthesizeParams(tracks=2, renderer="numpy", voice_clips=True), True),
    ):
        _say_numpy_lacks_soundfont_options.cache_clear()  # said once per process
        items = Synthesize().items(_ctx(asked), {})
        assert not any(i.payload["family"] == "voice" for i in items)  # the numpy timbres have no voice
        assert ("voice_clips need the soundfont renderer" in capsys.readouterr().err) == said


def test_a_library_plays_a_family_only_with_its_recordings(tmp_path):
    """A library named by path plays a family whose directory holds recordings; a known library
    only the families of its table, and only when they are installed (an older freepats may lack
    Voice Oohs: its voice clips then come from the soundfonts)."""
    import soundfile as sf

    lib = tmp_path / "mylib"
    (lib / "voice").mkdir(parents=True)
    assert not samples.plays(str(lib), "voice")  # an empty directory
    sf.write(lib / "voice" / "A4.wav", np.zeros(100), SR)
    samples._recordings.cache_clear()
    assert samples.plays(str(lib), "voice") and not samples.plays(str(lib), "cello")
    fake = tmp_path / "freepats"  # a known library's name, without the voice patch
    (fake / "Tone_000").mkdir(parents=True)
    assert not samples.plays(str(fake), "voice")
    assert samples.plays("freepats", "voice") == _freepats_voice()
