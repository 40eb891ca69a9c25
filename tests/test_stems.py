"""Demo stems (``synthesize.stem_fraction``): a mixture's performance with fewer parts, labels
following what plays, as extra tracks in the mixture's split; off by default."""

from __future__ import annotations

import hashlib

import jams
import numpy as np
import pytest

from mirpipe.demo import soundfont
from mirpipe.demo.arrange import STEM_ROLES, compose_mixture, stem, stem_roles
from mirpipe.demo.stage import StageContext, Synthesize, SynthesizeParams, has_stem, stem_id, track_id
from mirpipe.models.chord import encode_label
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig, parse_cluster
from mirpipe.pipeline.runner import Runner

SR = 22050
needs_soundfonts = pytest.mark.skipif(
    soundfont.available(["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "TimGM6mb.sf2"]) is not None,
    reason="sampled renderer unavailable",
)


def _with_bass(start: int = 0):
    """The first mixture from ``start`` with a bass part and a lead (most have both)."""
    for i in range(start, start + 50):
        perf = compose_mixture(i, 0, SR, 15, 20)
        roles = {p.role for p in perf.parts}
        if {"bass", "melody"} <= roles:
            return perf
    raise AssertionError("no mixture with a bass part")


def test_a_stem_keeps_the_harmony_and_the_roles_asked_for():
    perf = _with_bass()
    for keep in [(), ("drums",), ("melody",), ("bass", "drums")]:
        s = stem(perf, keep)
        roles = {p.role for p in s.parts}
        assert roles == {p.role for p in perf.parts if p.role in ("comp", "pad", *keep)}
        assert {e.channel for e in s.events} <= {p.channel for p in s.parts}
        assert {t[0] for t in s.tags} == {p.tag for p in s.parts}
        lead = "melody" in keep
        assert (s.melody_channel is not None) == lead and bool(s.melody) == lead
        assert s.duration == perf.duration and len(s.chords) == len(perf.chords)


def test_without_the_bass_each_chord_is_spelled_from_its_lowest_harmony_key():
    """Same root and pitch classes as the mixture's label; the bass is the lowest key the comp or
    pad starts inside the segment (an inversion when it is not the root)."""
    perf = _with_bass()
    s = stem(perf, ("drums",))
    harmony = {p.channel for p in s.parts if p.role in ("comp", "pad")}
    inverted = 0
    for seg, new in zip(perf.chords, s.chords):
        if seg.label == "N":
            assert new.label == "N"
            continue
        keys = [e.a for e in s.events if e.kind == "on" and e.channel in harmony and seg.start <= e.time < seg.end]
        _, pcs_old, _, _ = encode_label(seg.label)
        _, pcs_new, bass_new, _ = encode_label(new.label)
        assert np.array_equal(pcs_old, pcs_new), (seg.label, new.label)
        assert bass_new == min(keys) % 12 == new.bass, (new.label, sorted(keys))
        inverted += "/" in new.label and "/" not in seg.label
    assert inverted > 0  # the comp's voicings are not all in root position: labels changed
    assert stem(perf, ("bass",)).chords == perf.chords  # with the bass part the labels stay


def test_stem_roles_never_keep_everything_and_cover_each_subset():
    drawn = {stem_roles(i, 0) for i in range(200)}
    assert tuple(STEM_ROLES) not in drawn and len(drawn) == 2 ** len(STEM_ROLES) - 1
    assert stem_roles(7, 0) == stem_roles(7, 0)


@needs_soundfonts
def test_stem_items_follow_their_mixture_and_leave_the_fingerprint_alone():
    base = SynthesizeParams(tracks=40, clips_per_family=0, renderer="soundfont")
    ctx = lambda p: StageContext(workdir=None, params={"synthesize": p})  # noqa: E731
    none = Synthesize().items(ctx(base), {})
    half = base.model_copy(update={"stem_fraction": 0.5})
    items = {it.id: it for it in Synthesize().items(ctx(half), {})}
    stems = [it for it in items.values() if it.payload["kind"] == "stem"]
    assert len(none) == 40 and 8 <= len(stems) <= 32 and len(items) == 40 + len(stems)
    for it in stems:
        parent = items[track_id(it.payload["index"])]
        assert it.id == stem_id(it.payload["index"]) and has_stem(0, it.payload["index"], 0.5)
        assert it.payload["split"] == parent.payload["split"] and it.payload["soundfont"] == parent.payload["soundfont"]
    more = {it.id for it in Synthesize().items(ctx(base.model_copy(update={"stem_fraction": 0.8})), {})}
    assert set(items) <= more  # a larger fraction keeps the stems a smaller one made
    assert Synthesize().fingerprint_params(ctx(half)) == Synthesize().fingerprint_params(ctx(base))


@needs_soundfonts
def test_synthesize_writes_stems_with_their_labels(tmp_path):
    synth = dict(tracks=6, clips_per_family=0, min_duration=6.0, max_duration=9.0, seed=3, stem_fraction=1.0)
    cfg = PipelineConfig.model_validate({"synthesize": synth, "train": {"tasks": []}, "evaluate": {"tasks": []}})
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        Runner(tmp_path, cfg, progress=False).run(ex, only="synthesize")
    corpus = tmp_path / "corpus"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for i in range(6):
        jam = jams.load(str(corpus / f"{stem_id(i)}.jams"))
        mix = jams.load(str(corpus / f"{track_id(i)}.jams"))
        info = jam.sandbox.mirpipe_demo["stem"]
        assert info == {"of": track_id(i), "keeps": list(stem_roles(i, 3))}
        assert jam.sandbox.split == mix.sandbox.split
        assert digest(corpus / f"{stem_id(i)}.flac") != digest(corpus / f"{track_id(i)}.flac")
        voiced = [o.value["voiced"] for o in jam.search(namespace="pitch_contour")[0].data]
        assert any(voiced) == ("melody" in info["keeps"])
        assert len(jam.search(namespace="chord")[0].data) == len(mix.search(namespace="chord")[0].data)
