"""Play a solo clip from a sample library: recorded notes, one per pitch (or a few).

The demo's other sources of instrument timbres, beside the GM soundfonts. Its two training
soundfonts share most of their recordings (MuseScore General is built on FluidR3's samples),
so without them the instrument model hears one recording set per family; a library adds other
recordings of every family: ``tonejs-instruments`` (MIT, MP3s; ``demo/fetch_samples.py``)
and ``freepats`` (GUS patches; Debian).

Layouts: ``<library>/<instrument>/<note><octave>[ v<k>].<ext>`` (``As3.mp3`` is A#3,
``F2 v2.mp3`` a second take of F2), or ``<library>/.../<program>.pat`` (a GUS patch: its
samples' root pitches and sustain loops, ``gus_patch.py``); ``<library>`` is found in
``$MIRPIPE_SAMPLES_PATH`` or ``SEARCH_PATH``. A family plays one of its instruments
(``INSTRUMENTS``; other libraries name their directories after the family: ``acoustic-guitar``).

Playing, as a sampler does: each note takes the recording nearest its key, resampled by the
time-varying ratio its key and pitch bends ask for (the recording's own tuning measured at
load, so the annotated contour is what sounds; a patch's loop played out), gained by velocity,
volume (CC7) and expression (CC11), released with a short fade at note-off; a synthetic room
reverb (decaying noise, RT60 and send drawn per clip) follows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .arrange import Performance, bend_semitones, bend_track
from .families import FAMILIES
from .track import midi_to_hz

SEARCH_PATH = ("/usr/local/share/mirpipe/samples", "/usr/share/mirpipe/samples", "/usr/share/midi")  # the last: Debian's freepats
INSTRUMENTS: dict[str, dict[str, tuple[str, ...]]] = {  # library -> family -> its instrument directories
    "tonejs-instruments": {
        "piano": ("piano",),
        "acoustic guitar": ("guitar-acoustic", "guitar-nylon"),
        "electric guitar": ("guitar-electric",),
        "organ": ("organ",),
        "violin": ("violin",),
        "cello": ("cello",),
        "flute": ("flute",),
        "clarinet": ("clarinet",),
        "trumpet": ("trumpet",),
        "saxophone": ("saxophone",),
    },
    "freepats": {  # GUS patches (Debian freepats), one file per GM program
        f: tuple(f"Tone_000/{p}.pat" for p in programs)
        for f, programs in {
            "piano": ("000_Acoustic_Grand_Piano", "001_Acoustic_Brite_Piano"),
            "acoustic guitar": ("024_Nylon_Guitar", "025_Steel_Guitar"),
            "electric guitar": ("026_Jazz_Guitar", "027_Clean_Electric_Guitar", "029_Overdriven_Guitar"),
            "organ": ("016_Hammond_Organ", "019_Church_Organ"),
            "violin": ("040_Violin",),
            "cello": ("042_Cello",),
            "flute": ("073_Flute",),
            "clarinet": ("071_Clarinet",),
            "trumpet": ("056_Trumpet",),
            "saxophone": ("064_Soprano_Sax", "065_Alto_Sax", "066_Tenor_Sax"),
            "voice": ("053_Voice_Oohs",),  # the voice clips' (synthesize.voice_clips); tonejs-instruments has none
        }.items()
    },
}
INSTALL_HINTS = {
    "tonejs-instruments": "python3 demo/fetch_samples.py installs it",
    "freepats": "Debian/Ubuntu: apt-get install freepats",
}
AUDIO_SUFFIXES = (".mp3", ".ogg", ".flac", ".wav", ".pat")
UNROLL_S = 6.0  # a looped patch sample is played out to this length (longer than any demo note)
LOOP_DECAY_S = 1.0  # after its loop starts, a decaying family's looped sample dies away with this time constant
_NAME = re.compile(r"([A-Ga-g])(s|#|b)?(-?\d)(?: v\d+)?")
_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
ONSET_DB = -40.0  # a recording starts where it first reaches this level below its peak (MP3 encoders pad ~25 ms)
RELEASE_S = {True: 0.08, False: 0.05}  # fade time constant after note-off: sustained families, decaying ones
MAX_DETUNE_CENTS = 50.0  # a measured tuning further than this from the file's name is not trusted


class SampleLibraryUnavailable(RuntimeError):
    """A sample library that is not installed, or lacks a family's instruments."""


def is_library(source: str) -> bool:
    """A synthesize source is a soundfont file (.sf2/.sf3) or else a sample library."""
    return not source.lower().endswith((".sf2", ".sf3"))


def search_dirs() -> list[Path]:
    """``$MIRPIPE_SAMPLES_PATH``, then where ``demo/fetch_samples.py`` installs
    (``$MIRPIPE_SAMPLES_DIR``, else ``${XDG_DATA_HOME:-~/.local/share}/mirpipe/samples``), then ``SEARCH_PATH``."""
    extra = [p for p in os.environ.get("MIRPIPE_SAMPLES_PATH", "").split(os.pathsep) if p]
    data = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    installed = os.environ.get("MIRPIPE_SAMPLES_DIR") or os.path.join(data, "mirpipe", "samples")
    return [Path(p).expanduser() for p in (*extra, installed, *SEARCH_PATH)]


def family_instruments(library: str, family: str) -> tuple[str, ...]:
    """The instrument directories a family plays from (a library named by path: by its directory's name)."""
    return INSTRUMENTS.get(Path(library).name, {}).get(family, (family.replace(" ", "-"),))


def plays(library: str, family: str) -> bool:
    """Whether ``library`` has recordings of ``family`` here: in its table, if it is a known library
    (tonejs-instruments has no voice), and installed (an older freepats may lack a patch)."""
    known = INSTRUMENTS.get(Path(library).name)
    if known is not None and family not in known:
        return False
    try:
        find_library(library, (family,))
    except SampleLibraryUnavailable:
        return False
    return True


def find_library(library: str, families: Sequence[str]) -> Path:
    """The directory of ``library`` holding recordings for every family, or why not."""
    candidates = (
        [Path(library).expanduser()] if Path(library).expanduser().is_absolute() else [d / library for d in search_dirs()]
    )
    for root in candidates:
        if root.is_dir():
            lacking = [f for f in families if not all(_recordings(str(root / i)) for i in family_instruments(library, f))]
            if lacking:
                raise SampleLibraryUnavailable(f"sample library {root} has no recordings for {', '.join(lacking)}")
            return root.resolve()
    hint = f" ({INSTALL_HINTS[library]})" if library in INSTALL_HINTS else ""
    raise SampleLibraryUnavailable(f"sample library {library} not found in {', '.join(map(str, candidates))}{hint}")


def library_identity(root: Path) -> dict[str, int]:
    """What identifies an installed library for the stage fingerprint: files and bytes."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def key_of(name: str) -> int | None:
    """MIDI key of a recording's file name (``As3`` → 58, ``C#4`` → 61, ``Db4`` → 61), else None."""
    m = _NAME.fullmatch(name)
    if not m:
        return None
    acc = {"s": 1, "#": 1, "b": -1}.get(m.group(2) or "", 0)
    return 12 * (int(m.group(3)) + 1) + _PC[m.group(1).lower()] + acc


@cache
def _recordings(directory: str) -> tuple[tuple[int, str], ...]:
    """(key, path) of an instrument directory's recordings, sorted; for a GUS patch file, its
    samples' root keys and ``<file>#<index>``."""
    d = Path(directory)
    if d.suffix.lower() == ".pat":
        if not d.is_file():
            return ()
        return tuple(sorted((int(round(12 * np.log2(s.root_hz / 440.0) + 69)), f"{d}#{i}") for i, s in enumerate(_patch(str(d)))))
    if not d.is_dir():
        return ()
    out = [(k, str(p)) for p in d.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and (k := key_of(p.stem)) is not None]
    return tuple(sorted(out))


@cache
def _patch(path: str) -> list:
    from .gus_patch import PatchError, read_patch

    try:
        return read_patch(path)
    except PatchError as exc:
        raise SampleLibraryUnavailable(str(exc)) from None


def _unroll(x: np.ndarray, loop: tuple[float, float], rate: int, decaying: bool) -> np.ndarray:
    """A looped sample played out to ``UNROLL_S``: its sustain loop repeated; a decaying family's
    dies away after the loop starts (a GUS envelope's job, which the player here does not run)."""
    start, end = int(round(loop[0])), min(int(round(loop[1])), len(x))
    if end - start < 2:
        return x
    n = max(len(x), int(UNROLL_S * rate))
    y = np.concatenate([x[:end], np.tile(x[start:end], -(-(n - end) // (end - start)))])[:n]
    if decaying:
        y[start:] *= np.exp(-np.arange(n - start) / (LOOP_DECAY_S * rate)).astype(np.float32)
    return y


@dataclass(frozen=True)
class Recording:
    key: int  # the key its file name says
    pitch: float  # the pitch it sounds (fractional MIDI, measured)
    audio: np.ndarray  # mono float32 at the render rate, from its onset
    octave: int  # 0, or -12 / -24 where it sounds one / two octaves below its name (``octave_of``)


@cache
def load(path: str, key: int, sr: int, decaying: bool = False) -> Recording:
    """A recording decoded, made mono, resampled to ``sr``, cut at its onset, its tuning measured
    (a GUS patch sample ``<file>#<index>``: its loop played out first, ``decaying`` as above)."""
    import librosa
    import soundfile as sf

    file, _, index = path.rpartition("#")
    if file.lower().endswith(".pat"):
        s = _patch(file)[int(index)]
        y, file_sr = (_unroll(s.data, s.loop, s.rate, decaying) if s.loop else s.data), s.rate
    else:
        try:
            y, file_sr = sf.read(path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, OSError) as exc:  # libsndfile's own errors: the library's file is unusable
            raise SampleLibraryUnavailable(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from None
        y = y.mean(axis=1)
    if file_sr != sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak <= 0:
        raise SampleLibraryUnavailable(f"{path}: silent recording")
    onset = int(np.argmax(np.abs(y) >= peak * 10 ** (ONSET_DB / 20)))
    y = np.ascontiguousarray(y[onset:], dtype=np.float32)
    return Recording(key, key + _detune_semitones(y, key, sr), y, octave_of(y, key, sr))


def _detune_semitones(y: np.ndarray, key: int, sr: int) -> float:
    """How far the recording sounds from its named key: median YIN f0 over 0.1-0.8 s (within
    ±1.5 semitones of the key, so the octave is the name's), 0 when unmeasurable."""
    import librosa

    seg = y[int(0.1 * sr) : int(0.8 * sr)]
    hz = float(midi_to_hz(key))
    if len(seg) < 4096 or hz * 2 ** (1.5 / 12) >= sr / 4:
        return 0.0
    f0 = librosa.yin(seg, fmin=hz * 2 ** (-1.5 / 12), fmax=hz * 2 ** (1.5 / 12), sr=sr, frame_length=4096)
    cents = float(np.median(1200 * np.log2(f0 / hz)))
    return cents / 100.0 if np.isfinite(cents) and abs(cents) <= MAX_DETUNE_CENTS else 0.0


def nearest(recordings: tuple[tuple[int, str], ...], key: int, rng: np.random.Generator) -> tuple[int, str]:
    """The recording whose key is nearest ``key`` (the lower on a tie; one of several takes at random)."""
    best = min(abs(k - key) for k, _ in recordings)
    keys = sorted({k for k, _ in recordings if abs(k - key) == best})
    takes = [r for r in recordings if r[0] == keys[0]]
    return takes[int(rng.integers(len(takes)))]


def octave_of(audio: np.ndarray, key: int, sr: int) -> int:
    """0, or -12 / -24 where a recording sounds one / two octaves below its name (an organ's
    16' stop), measured as ``labels.sounding_offsets`` measures soundfont presets."""
    from .labels import period_octave

    return period_octave(audio[int(0.1 * sr) : int(0.6 * sr)], sr, key)


@dataclass(frozen=True)
class LibraryInfo:
    library: str
    instrument: str
    recordings: list[str]  # file names played
    sounding: dict[tuple[int, int], int]  # (channel, key) -> octave the recording played for it sounds at (labels.Sounding)


def _gain(events, channel: int, ctrl: int) -> float:
    """The last value of a controller set on the channel (its setup, at time 0), as a power-law gain."""
    values = [e.b for e in events if e.kind == "cc" and e.channel == channel and e.a == ctrl]
    return (values[-1] / 127.0) ** 2 if values else 1.0


def render_clip(perf: Performance, library: str, sr: int, seed: Sequence[int]) -> tuple[np.ndarray, LibraryInfo]:
    """Mono float32 audio of a solo clip (its melody channel) played by the library's recordings of
    the clip's family, peak-normalised to the performance's gain like the soundfont renderer."""
    if perf.melody_channel is None or not perf.parts:
        raise ValueError("render_clip plays a clip's melody channel; this performance has none")
    family = perf.parts[0].tag
    root = find_library(library, [family])
    rng = np.random.default_rng([*seed, 7331])
    choices = family_instruments(library, family)
    instrument = choices[int(rng.integers(len(choices)))]
    recordings = _recordings(str(root / instrument))
    ch = perf.melody_channel
    n = int(np.ceil(perf.duration * sr))
    dry = np.zeros(n, np.float64)
    level = _gain(perf.events, ch, 7) * _gain(perf.events, ch, 11)
    bends = bend_track(perf.events, ch)
    velocity = {(e.time, e.a): e.b for e in perf.events if e.kind == "on" and e.channel == ch}
    tau = RELEASE_S[FAMILIES[family].sustained]
    played, sounding = [], {}
    for note in perf.melody:
        key, path = nearest(recordings, note.key, rng)
        rec = load(path, key, sr, not FAMILIES[family].sustained)
        played.append(Path(path).name)
        sounding[(ch, note.key)] = rec.octave
        i0 = int(round(note.start * sr))
        held = int(round((note.end - note.start) * sr))
        length = min(held + int(5 * tau * sr), n - i0)
        if length <= 0:
            continue
        t = note.start + np.arange(length) / sr
        at = np.minimum(t, note.end - 1e-6)  # after note-off the bend stays where it was
        ratio = 2.0 ** ((note.key + bend_semitones(bends, at) - rec.pitch) / 12.0)
        pos = np.concatenate([[0.0], np.cumsum(ratio[:-1])])
        inside = pos < len(rec.audio) - 1
        voice = np.interp(pos[inside], np.arange(len(rec.audio)), rec.audio)
        env = np.exp(-np.maximum(np.arange(len(voice)) - held, 0) / (tau * sr))
        amp = level * (velocity.get((note.start, note.key), 100) / 127.0) ** 2
        dry[i0 : i0 + len(voice)] += amp * voice * env
    y = dry + _room(dry, rng, _gain(perf.events, ch, 91) ** 0.5, sr) if dry.any() else dry
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    y *= 0.9 * 10 ** (perf.gain_db / 20.0) / max(peak, 1e-9)
    return np.clip(y, -1.0, 1.0).astype(np.float32), LibraryInfo(library, instrument, sorted(set(played)), sounding)


def _room(dry: np.ndarray, rng: np.random.Generator, send: float, sr: int) -> np.ndarray:
    """The wet signal of a synthetic room: exponentially decaying noise (RT60 0.3-1.2 s, low-passed)
    at ``send`` of the dry level (the part's reverb send, CC91 / 127), cut to the dry length."""
    from scipy.signal import fftconvolve, lfilter

    rt60 = float(rng.uniform(0.3, 1.2))
    m = int(rt60 * sr)
    t = np.arange(m) / sr
    ir = rng.standard_normal(m) * np.exp(-6.91 * t / rt60)
    ir = lfilter([0.4], [1.0, -0.6], ir)  # a one-pole low-pass: walls absorb the highs
    ir *= send / max(np.sqrt(np.sum(ir**2)), 1e-12)
    return fftconvolve(dry, ir)[: len(dry)]
