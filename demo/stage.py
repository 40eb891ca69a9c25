"""synthesize: render the embedded demo corpus (FLAC + JAMS per track), deterministic for a seed.

Two renderers: ``soundfont`` (MIDI arrangements played by General MIDI soundfonts
through FluidSynth; the default when FluidSynth and the soundfonts are installed) and
``numpy`` (the synthetic timbres of ``synth/timbres.py``; the fallback). The stage
decides each track's split itself (``jam.sandbox.split``) and renders the test split
with a soundfont no train or val track uses.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirpipe.errors import ConfigurationError
from mirpipe.models.settings import NOT_FINGERPRINTED, fingerprinted, since
from mirpipe.records import Record
from mirpipe.stages import STAGES, Done, Stage, StageContext, WorkItem
from mirpipe.storage.atomic import temp_path

from . import splits
from .arrange import LEAD_LOW
from .families import SOLO_FAMILIES, clip_families
from .samples import is_library, plays

CORPUS_DIR = "corpus"
NUMPY_CLIP_FAMILIES = ("organ", "pluck", "epiano", "mallet", "bowed", "reed", "flute", "brass")  # synth/timbres.py


def _default_soundfonts() -> dict[str, list[str]]:
    train = ["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "tonejs-instruments", "freepats"]
    return {"train": train, "val": list(train), "test": ["TimGM6mb.sf2"]}


class SynthesizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The track, clip, take and stem counts and the solo share only decide which items exist (NOT_FINGERPRINTED):
    # growing the corpus keeps old tracks.
    tracks: int = Field(
        80,
        ge=1,
        le=100_000,
        description="number of demo tracks (band mixtures and solo melodies)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    seed: int = Field(0, description="corpus seed: same seed, same corpus")
    sr: int = Field(22050, ge=8000)
    min_duration: float = Field(15.0, gt=2.0)
    max_duration: float = Field(35.0, gt=2.0)
    solo_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="share of melody-only solo tracks", json_schema_extra=NOT_FINGERPRINTED
    )
    clips_per_family: int = Field(
        20, ge=0, le=10_000, description="short solo clips per instrument family", json_schema_extra=NOT_FINGERPRINTED
    )
    chord_takes: int = Field(
        0,
        ge=0,
        le=100_000,
        description="tracks of chords played one at a time by one harmony instrument, most with silence (N) between "
        "them, as chord datasets record them (soundfont renderer; arrange.compose_chord_take)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    stem_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of band mixtures that also get a stem track (soundfont renderer): the same performance "
        "with its harmony and a random part of the bass, drums and lead (a lone piano, piano and drums, ...), "
        "in the mixture's split, labels following what plays (arrange.stem)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    sung_bends: bool = Field(
        False,
        description="the leads of band mixtures and solo tracks, when their family bends (voice, strings, winds), "
        "bend like singers: glides from the note before, onset scoops, 20-90 cent vibrato fading in "
        "(arrange.sung_bends); the same notes, labels following the bends exactly; solo clips stay as they are "
        "(soundfont renderer; re-renders the corpus)",
        json_schema_extra=since(False),  # off: the corpus of before it existed, not rendered again
    )
    lead_rests: bool = Field(
        False,
        description="the leads of band mixtures and solo tracks are sung in phrases: 2-4 bars, then 1-2 bars where "
        "the lead rests and the band, if any, plays alone (half the tracks open so), as songs breathe; the melody's labels "
        "are unvoiced there and the lead's instrument tag holds per phrase (arrange.phrase_rests; the band and "
        "the key and onset of every kept note unchanged; soundfont renderer; re-renders the corpus)",
        json_schema_extra=since(False),  # off: the corpus of before it existed, not rendered again
    )
    lead_low: int = Field(
        LEAD_LOW,
        ge=21,
        le=72,  # every lead family reaches above it
        description="the lowest key (MIDI) a band mixture's lead plays, within its family's range: 60 (C4) keeps "
        "leads above the band's comping; 48 lets them sit where male voices and tenor saxophones sing, among "
        "the comping (solo tracks and clips always use the family's range; re-renders the corpus)",
        json_schema_extra=since(LEAD_LOW),  # the corpus of before it existed, not rendered again
    )
    voice_clips: bool = Field(
        True,
        description="also render clips_per_family solo clips of a singing voice (GM choir and voice presets, and "
        "freepats' Voice Oohs), sung with glides, scoops and vibrato as arrange.sung_bends draws them: without them "
        "the instrument model never hears a voice alone (soundfont renderer; only adds clips; false: the corpus "
        "of before)",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    clip_min_duration: float = Field(3.0, gt=0.5)
    clip_max_duration: float = Field(6.0, gt=0.5)
    renderer: Literal["auto", "soundfont", "numpy"] = Field(
        "auto", description="soundfont: FluidSynth + GM soundfonts; numpy: synthetic timbres; auto: soundfont when installed"
    )
    soundfonts: dict[str, list[str]] = Field(
        default_factory=_default_soundfonts,
        description="per split, the sources its tracks draw from: soundfonts (.sf2/.sf3 file names or paths) for every "
        "track, and sample libraries (any other name: a directory of recorded notes, synth/samples.py) "
        "for the solo clips",
    )

    @model_validator(mode="after")
    def _check(self):
        if self.max_duration < self.min_duration:
            raise ValueError(f"max_duration {self.max_duration} < min_duration {self.min_duration}")
        if self.clip_max_duration < self.clip_min_duration:
            raise ValueError(f"clip_max_duration {self.clip_max_duration} < clip_min_duration {self.clip_min_duration}")
        if set(self.soundfonts) != set(splits.SPLITS) or not all(self.soundfonts.values()):
            raise ValueError(f"soundfonts needs a non-empty list for each of {splits.SPLITS}")
        for split, sources in self.soundfonts.items():
            if not self.soundfont_files(split):
                raise ValueError(
                    f"soundfonts.{split} names no soundfont (.sf2/.sf3): its mixtures need one "
                    f"(sample libraries play solo clips only): {sources}"
                )
        seen = set(self.soundfonts["train"]) | set(self.soundfonts["val"])
        if seen & set(self.soundfonts["test"]):
            raise ValueError(
                f"the test soundfonts must be unseen in train and val: {sorted(seen & set(self.soundfonts['test']))}"
            )
        return self

    def soundfont_files(self, *splits: str) -> list[str]:
        """The soundfont files the splits name (sample libraries are not soundfonts)."""
        return [s for split in splits for s in self.soundfonts[split] if not is_library(s)]

    def all_soundfonts(self) -> list[str]:
        return sorted(set(self.soundfont_files(*self.soundfonts)))

    def all_libraries(self) -> list[str]:
        return sorted({s for v in self.soundfonts.values() for s in v if is_library(s)})


@dataclass(frozen=True)
class SynthRecord(Record):
    track: str
    duration: float
    solo: bool
    instruments: list[str]
    split: str = "train"
    kind: str = "mixture"  # mixture, solo, clip, stem, take
    renderer: str = "numpy"
    soundfont: str | None = None


def track_id(index: int) -> str:
    return f"demo-{index:04d}"


def clip_id(family: str, index: int) -> str:
    return f"solo-{family.replace(' ', '-')}-{index:03d}"


def take_id(index: int) -> str:
    return f"take-{index:03d}"


def stem_id(index: int) -> str:
    return f"{track_id(index)}-stem"


def has_stem(seed: int, index: int, fraction: float) -> bool:
    """Whether mixture ``index`` gets a stem track: a draw of its own, so a larger fraction keeps
    the stems a smaller one made."""
    return fraction > 0 and float(np.random.default_rng([seed, index, 19]).random()) < fraction


@cache
def _say_numpy_lacks_soundfont_options() -> None:
    print(
        "mirpipe: synthesize: chord_takes, stem_fraction, sung_bends, lead_rests, lead_low and voice_clips need the soundfont renderer "
        "(MIDI parts to play alone, pitch bends, voice presets); the numpy renderer makes none of them",
        file=sys.stderr,
    )


@cache
def _resolve(renderer: str, soundfonts: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The renderer this machine runs and what identifies it (library version, soundfont sizes)."""
    if renderer == "numpy":
        return "numpy", {}
    from . import soundfont

    why = soundfont.available(list(soundfonts))
    if why is None:
        files = {s: soundfont.find_soundfont(s).stat().st_size for s in soundfonts}
        return "soundfont", {"fluidsynth": soundfont.library_version(), "soundfont_bytes": files}
    if renderer == "soundfont":
        raise ConfigurationError(f"synthesize.renderer is soundfont but {why}; run scripts/system-deps.sh")
    print(
        f"mirpipe: synthesize: {why}; rendering the demo corpus with the numpy timbres instead "
        "(scripts/system-deps.sh installs FluidSynth and the soundfonts)",
        file=sys.stderr,
    )
    return "numpy", {"soundfont_unavailable": why}


# A test soundfont sharing this share of its sample names with a train/val one is not unseen.
SHARED_SAMPLES_LIMIT = 0.25


def resolve_renderer(p: SynthesizeParams) -> tuple[str, dict[str, Any]]:
    """The renderer, and what identifies it: FluidSynth's version, the soundfonts' sizes and the
    installed sample libraries' files (a library installed later re-renders the corpus)."""
    renderer, identity = _resolve(p.renderer, tuple(p.all_soundfonts()))
    if renderer == "soundfont":
        _check_test_soundfonts_unseen(tuple(p.soundfont_files("test")), tuple(p.soundfont_files("train", "val")))
        libraries = _libraries(p.renderer, tuple(p.all_libraries()))
        if libraries:
            identity = {**identity, "sample_libraries": libraries}
    return renderer, identity


@cache
def _libraries(renderer: str, names: tuple[str, ...]) -> dict[str, Any]:
    """{library: its identity} of the installed sample libraries; one that is not installed is
    left out with a message on stderr (``renderer: soundfont``: an error), as a missing
    soundfont makes ``auto`` fall back."""
    from . import samples

    out = {}
    for name in names:
        try:
            out[name] = samples.library_identity(samples.find_library(name, SOLO_FAMILIES))
        except samples.SampleLibraryUnavailable as exc:
            if renderer == "soundfont":
                raise ConfigurationError(f"synthesize.renderer is soundfont but {exc}") from None
            print(f"mirpipe: synthesize: {exc}; the solo clips are rendered with the soundfonts alone", file=sys.stderr)
    return out


def sources_of(p: SynthesizeParams, split: str, kind: str, family: str | None = None) -> list[str]:
    """What a track of ``kind`` in ``split`` may be rendered with: the split's soundfonts, and for
    solo clips also its installed sample libraries that have recordings of the clip's ``family``."""
    installed = _libraries(p.renderer, tuple(p.all_libraries()))

    def has(library: str) -> bool:
        return kind == "clip" and library in installed and (family is None or plays(library, family))

    return [s for s in p.soundfonts[split] if not is_library(s) or has(s)]


@cache
def _check_test_soundfonts_unseen(test: tuple[str, ...], seen: tuple[str, ...]) -> None:
    """The test split's timbres must be unseen in training: different file names are not enough
    when one soundfont is built from another's recordings (csound's sf_GMbank shares 392 of
    TimGM6mb's 521 sample names), so the samples' names are compared."""
    from . import soundfont

    for t in test:
        for s in seen:
            shared, total = soundfont.shared_samples(soundfont.find_soundfont(t), soundfont.find_soundfont(s))
            if total and shared / total >= SHARED_SAMPLES_LIMIT:
                raise ValueError(
                    f"synthesize.soundfonts: the test soundfont {t} shares {shared} of its {total} sample "
                    f"names with {s}, a train/val soundfont: its timbres would not be unseen in training"
                )


def _clip_families(renderer: str, voice: bool) -> tuple[str, ...]:
    return clip_families(voice) if renderer == "soundfont" else NUMPY_CLIP_FAMILIES


@STAGES.register
class Synthesize(Stage):
    name = "synthesize"
    params = SynthesizeParams
    optional = True  # only when pipeline.yaml (or `mirpipe demo`) asks for the demo corpus
    version = "5"  # 3: sampled renderer (GM soundfonts), splits decided here, solo clips per family;
    # 4: the melody contour voiced through each note's audible release, note_midi holds every pitched part,
    # both at the octave each preset sounds (measured per soundfont); 5: pitch bends sound at the range the
    # labels read (RPN 0 reached FluidSynth out of order before, so leads bent a sixth of their labels)
    record_type = SynthRecord

    def items(self, ctx: StageContext, upstream: Mapping[str, Mapping[str, Done]]) -> list[WorkItem]:
        p: SynthesizeParams = ctx.params["synthesize"]
        renderer, _ = resolve_renderer(p)
        voice_asked = p.voice_clips and "voice_clips" in p.model_fields_set  # on by default: no word unless asked for
        if renderer != "soundfont" and (
            p.chord_takes or p.stem_fraction or p.sung_bends or p.lead_rests or p.lead_low != LEAD_LOW or voice_asked
        ):
            _say_numpy_lacks_soundfont_options()
        n_solo = round(p.tracks * p.solo_fraction)
        items = []
        for i in range(p.tracks):
            solo = i >= p.tracks - n_solo
            group = splits.GROUP_SOLO if solo else splits.GROUP_MIXTURE
            split = splits.split_of(p.seed, group, i)
            payload = {
                "index": i,
                "solo": solo,
                "kind": "solo" if solo else "mixture",
                "split": split,
                "family": None,
                "renderer": renderer,
                "soundfont": splits.soundfont_of(p.seed, group, i, sources_of(p, split, "mixture"))
                if renderer == "soundfont"
                else None,
            }
            items.append(WorkItem(track_id(i), payload=payload, identity=payload))
            if not solo and renderer == "soundfont" and has_stem(p.seed, i, p.stem_fraction):
                from .arrange import stem_roles

                extra = {**payload, "kind": "stem", "keep": list(stem_roles(i, p.seed))}
                items.append(WorkItem(stem_id(i), payload=extra, identity=extra))
        for k in range(p.chord_takes if renderer == "soundfont" else 0):
            split = splits.split_of(p.seed, splits.GROUP_TAKES, k)
            sources = sources_of(p, split, "mixture")
            take = {"index": k, "solo": False, "kind": "take", "split": split, "family": None, "renderer": renderer}
            take["soundfont"] = splits.soundfont_of(p.seed, splits.GROUP_TAKES, k, sources)
            items.append(WorkItem(take_id(k), payload=take, identity=take))
        families = _clip_families(renderer, p.voice_clips)
        for k in range(p.clips_per_family):
            for f, family in enumerate(families):
                group = splits.GROUP_CLIPS + f
                split = splits.split_of(p.seed, group, k)
                payload = {
                    "index": k,
                    "solo": True,
                    "kind": "clip",
                    "split": split,
                    "family": family,
                    "renderer": renderer,
                    "soundfont": splits.soundfont_of(p.seed, group, k, sources_of(p, split, "clip", family))
                    if renderer == "soundfont"
                    else None,
                }
                items.append(WorkItem(clip_id(family, k), payload=payload, identity=payload))
        return items

    def fingerprint_params(self, ctx: StageContext) -> dict[str, Any]:
        # what each field declares (the counts: which items exist; sung_bends: only when on), with the
        # renderer resolved (auto is whichever was installed)
        p: SynthesizeParams = ctx.params["synthesize"]
        renderer, identity = resolve_renderer(p)
        return {**fingerprinted(p), "renderer": renderer, "renderer_identity": identity}

    def run(self, item: WorkItem, ctx: StageContext) -> SynthRecord:
        p: SynthesizeParams = ctx.params["synthesize"]
        pay = item.payload
        renderer = pay["renderer"]  # the driver's decision: a worker without FluidSynth fails, it does not switch
        if renderer == "soundfont":
            y, jam, duration, instruments = _render_sampled(item.id, pay, p)
        else:
            y, jam, duration, instruments = _render_numpy(item.id, pay, p)
        jam.sandbox.split = pay["split"]
        jam.sandbox.mirpipe_demo["renderer"] = renderer
        if pay["kind"] == "stem":  # which mixture it comes from, and what it kept besides the harmony
            jam.sandbox.mirpipe_demo["stem"] = {"of": track_id(pay["index"]), "keeps": pay["keep"]}
        corpus = ctx.path(CORPUS_DIR)
        corpus.mkdir(parents=True, exist_ok=True)
        audio, jams_path = corpus / f"{item.id}.flac", corpus / f"{item.id}.jams"
        tmp = temp_path(audio)
        sf.write(tmp, y, p.sr, format="FLAC", subtype="PCM_16")
        tmp.replace(audio)
        tmp = temp_path(jams_path)
        jam.save(str(tmp), strict=True, fmt="json")
        tmp.replace(jams_path)
        return SynthRecord(
            item.id, float(duration), bool(pay["solo"]), instruments, pay["split"], pay["kind"], renderer, pay["soundfont"]
        )

    def outputs_valid(self, item: WorkItem, ctx: StageContext, record: SynthRecord) -> bool:
        corpus = ctx.path(CORPUS_DIR)
        return (corpus / f"{item.id}.flac").exists() and (corpus / f"{item.id}.jams").exists()


def _render_sampled(track: str, pay: Mapping[str, Any], p: SynthesizeParams):
    from .arrange import compose_chord_take, compose_clip, compose_mixture, stem

    if pay["kind"] == "clip":
        perf = compose_clip(pay["index"], p.seed, pay["family"], p.sr, p.clip_min_duration, p.clip_max_duration)
    elif pay["kind"] == "take":
        perf = compose_chord_take(pay["index"], p.seed, p.sr, p.min_duration, p.max_duration)
    else:
        perf = compose_mixture(
            pay["index"],
            p.seed,
            p.sr,
            p.min_duration,
            p.max_duration,
            solo=pay["solo"],
            sung=p.sung_bends,
            phrased=p.lead_rests,
            lead_low=p.lead_low,
        )
        if pay["kind"] == "stem":
            perf = stem(perf, tuple(pay["keep"]))
    play = _play_library if is_library(pay["soundfont"]) else _play_soundfont  # libraries: solo clips only (sources_of)
    y, jam = play(track, perf, pay, p)
    return y, jam, perf.duration, sorted({t for t, _, _ in perf.tags})


def _play_soundfont(track: str, perf, pay: Mapping[str, Any], p: SynthesizeParams):
    """A performance played by FluidSynth with a GM soundfont, annotated from its lead part alone."""
    from . import labels, soundfont

    y, info = soundfont.render(perf, pay["soundfont"], p.sr)
    others = tuple(sorted({e.channel for e in perf.events} - {perf.melody_channel}))
    lead = None  # a stem without its lead has no melody
    if perf.melody_channel is not None:
        lead = soundfont.render(perf, pay["soundfont"], p.sr, mute=others)[0] if others else y  # the lead alone: its release
    jam = labels.annotate(
        perf,
        track,
        {"soundfont": info.soundfont, "missing_presets": info.missing_presets, "fluidsynth": soundfont.library_version()},
        lead_audio=lead,
        sr=p.sr if lead is not None else None,
        sounding=labels.sounding_offsets(perf, pay["soundfont"], p.sr),
    )
    return y, jam


def _play_library(track: str, perf, pay: Mapping[str, Any], p: SynthesizeParams):
    """A solo clip played by a sample library's recordings (synth/samples.py)."""
    from . import labels, samples

    family = clip_families(voice=True).index(pay["family"])
    y, info = samples.render_clip(perf, pay["soundfont"], p.sr, (p.seed, family, pay["index"]))
    jam = labels.annotate(
        perf,
        track,
        {"sample_library": info.library, "instrument": info.instrument, "recordings": info.recordings},
        lead_audio=y,
        sr=p.sr,
        sounding=info.sounding,
    )
    return y, jam


def _render_numpy(track: str, pay: Mapping[str, Any], p: SynthesizeParams):
    from .track import annotate, compose, render

    if pay["kind"] == "clip":
        index = 100_000 + NUMPY_CLIP_FAMILIES.index(pay["family"]) * 10_000 + pay["index"]
        score = compose(index, p.seed, True, p.clip_min_duration, p.clip_max_duration + 4.0)
        score = replace(score, melody_instrument=pay["family"])
    else:
        index = pay["index"]
        score = compose(index, p.seed, pay["solo"], p.min_duration, p.max_duration)
    y = render(score, p.sr, p.seed, index)
    jam = annotate(score, track, pay["solo"])
    return y, jam, score.duration, sorted({n for n in (score.melody_instrument, score.accompaniment) if n is not None})
