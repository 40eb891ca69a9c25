"""Render a performance with a General MIDI soundfont through FluidSynth (pyfluidsynth + libfluidsynth).

A fresh synthesizer renders each track (the soundfont's samples are shared between
synthesizers of one process, so this costs ~0.05 s): no reverb tail, voice or LFO
state carries over, and a (performance, soundfont) gives the same samples every time.
Chorus is off (its send is 0 on every channel), reverb is on; one DSP thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .arrange import DRUM_CHANNEL, Performance

SEARCH_PATH = (  # where Debian, Fedora, Arch and Homebrew put soundfonts; MIRPIPE_SOUNDFONT_PATH first
    "/usr/share/sounds/sf2",
    "/usr/share/sounds/sf3",
    "/usr/share/soundfonts",
    "/usr/share/sounds/soundfonts",
    "/usr/local/share/soundfonts",
    "/opt/homebrew/share/soundfonts",
    "~/.local/share/soundfonts",
)
# Debian packages that provide the default soundfonts (scripts/system-deps.sh installs them).
PACKAGES = {
    "FluidR3_GM.sf2": "fluid-soundfont-gm",
    "MuseScore_General_Lite.sf3": "musescore-general-soundfont-small",
    "TimGM6mb.sf2": "timgm6mb-soundfont",
    "OPL-3_FM_128M.sf2": "opl3-soundfont",
}


class SoundfontUnavailable(RuntimeError):
    """No FluidSynth library, or a soundfont that is not installed."""


def search_dirs() -> list[Path]:
    extra = [p for p in os.environ.get("MIRPIPE_SOUNDFONT_PATH", "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in (*extra, *SEARCH_PATH)]


def find_soundfont(name: str) -> Path:
    """An absolute path, or a file name looked up in ``search_dirs()``."""
    p = Path(name).expanduser()
    if p.is_absolute():
        if p.is_file():
            return p
        raise SoundfontUnavailable(f"soundfont {name} does not exist")
    for d in search_dirs():
        if (d / name).is_file():
            return (d / name).resolve()
    pkg = PACKAGES.get(name)
    hint = f" (Debian/Ubuntu: apt-get install {pkg})" if pkg else ""
    raise SoundfontUnavailable(f"soundfont {name} not found in {', '.join(map(str, search_dirs()))}{hint}")


@cache
def sample_names(path: str) -> frozenset[str]:
    """The names of a soundfont's samples (sf2 and sf3: the ``shdr`` records of its ``pdta`` list),
    read by walking the RIFF chunks (the sample data is skipped, not read)."""
    try:
        return _shdr_names(path)
    except struct.error:
        raise ValueError(f"{path}: truncated SoundFont (a chunk header runs past the end of the file)") from None


def _shdr_names(path: str) -> frozenset[str]:
    with open(path, "rb") as f:
        riff, _, form = struct.unpack("<4sI4s", f.read(12))
        if riff != b"RIFF" or form != b"sfbk":
            raise ValueError(f"{path}: not a SoundFont (RIFF sfbk) file")
        while len(header := f.read(8)) == 8:
            cid, size = struct.unpack("<4sI", header)
            end = f.tell() + size
            if cid == b"LIST" and f.read(4) == b"pdta":
                while f.tell() < end:
                    sid, ssize = struct.unpack("<4sI", f.read(8))
                    if sid == b"shdr":
                        return frozenset(_record_names(f.read(ssize))) - {"", "EOS"}
                    f.seek(ssize + (ssize & 1), 1)
            f.seek(end)
            if size & 1 and f.read(1) not in (b"\0", b""):  # RIFF pads odd chunks; some sf3 writers do not
                f.seek(end)
    return frozenset()


def _record_names(shdr: bytes):
    """Each 46-byte sample header's name (its first 20 bytes); a stereo pair is one recording."""
    for i in range(0, len(shdr) - 45, 46):
        name = shdr[i : i + 20].split(b"\0", 1)[0].decode("latin-1").strip()
        yield name.removesuffix("(L)").removesuffix("(R)").strip()


def shared_samples(a: Path | str, b: Path | str) -> tuple[int, int]:
    """(sample names of ``a`` also in ``b``, sample names of ``a``): soundfonts derived from one
    another keep their samples' names (MuseScore General's violin is FluidR3's, in mono)."""
    na, nb = sample_names(str(a)), sample_names(str(b))
    return len(na & nb), len(na)


@cache
def _fluidsynth():
    """The pyfluidsynth module with ``fluid_synth_write_float`` bound (float output, no dither)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints where it found the library when $CI is set
            import fluidsynth
    except ImportError as exc:  # pyfluidsynth missing, or it found no libfluidsynth
        raise SoundfontUnavailable(
            f"FluidSynth is not available ({exc}); Debian/Ubuntu: apt-get install libfluidsynth3, pip install pyfluidsynth"
        ) from None
    write = fluidsynth._fl.fluid_synth_write_float
    write.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    write.restype = ctypes.c_int
    return fluidsynth, write


def library_version() -> str:
    fs, _ = _fluidsynth()
    try:
        major, minor, micro = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        fs._fl.fluid_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(micro))
        return f"{major.value}.{minor.value}.{micro.value}"
    except AttributeError:
        return "unknown"


def available(names: list[str]) -> str | None:
    """None when FluidSynth and every named soundfont are here, else why not."""
    try:
        _fluidsynth()
        for n in names:
            find_soundfont(n)
    except SoundfontUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class RenderInfo:
    soundfont: str
    missing_presets: list[str]  # "bank:program" the soundfont lacks (fallen back to program 0 of the bank)


_SETTINGS = {"synth.chorus.active": 0, "synth.reverb.active": 1, "synth.cpu-cores": 1, "synth.polyphony": 256, "synth.verbose": 0}


@cache
def _keep_loaded(path: str):
    """A synthesizer that holds the soundfont for the life of the process: FluidSynth shares
    loaded samples between synthesizers, so each fresh one loads it in milliseconds (an sf3
    is otherwise Vorbis-decoded again, ~2 s)."""
    fs, _ = _fluidsynth()
    holder = fs.Synth(gain=0.4, samplerate=22050.0, **_SETTINGS)
    if holder.sfload(path) < 0:
        raise SoundfontUnavailable(f"FluidSynth cannot load {path}")
    return holder


def render(perf: Performance, soundfont: str, sr: int, mute: tuple[int, ...] = ()) -> tuple[np.ndarray, RenderInfo]:
    """Mono float32 audio (peak-normalised to the performance's gain) and what was used.

    ``mute``: channels left out (the tests render stems this way).
    """
    fs, write = _fluidsynth()
    path = find_soundfont(soundfont)
    _keep_loaded(str(path))
    synth = fs.Synth(gain=0.4, samplerate=float(sr), **_SETTINGS)
    try:
        sfid = synth.sfload(str(path))
        if sfid < 0:
            raise SoundfontUnavailable(f"FluidSynth cannot load {path}")
        synth.set_reverb(0.45, 0.4, 0.8, 0.6)
        missing = []
        for p in perf.parts:
            if synth.program_select(p.channel, sfid, p.bank, p.program) < 0:
                missing.append(f"{p.bank}:{p.program}")
                synth.program_select(p.channel, sfid, p.bank, 0)
        tail = 1.0
        n = int(np.ceil((perf.duration + tail) * sr))
        left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
        pos = 0

        def advance(to: int) -> None:
            nonlocal pos
            to = min(to, n)
            if to > pos:
                write(synth.synth, to - pos, left.ctypes.data + 4 * pos, 0, 1, right.ctypes.data + 4 * pos, 0, 1)
                pos = to

        for ev in perf.events:
            if ev.channel in mute:
                continue
            advance(int(round(ev.time * sr)))
            if ev.kind == "on":
                synth.noteon(ev.channel, ev.a, ev.b)
            elif ev.kind == "off":
                if ev.channel != DRUM_CHANNEL:
                    synth.noteoff(ev.channel, ev.a)
            elif ev.kind == "cc":
                synth.cc(ev.channel, ev.a, ev.b)
            elif ev.kind == "bend":
                synth.pitch_bend(ev.channel, ev.a)
        advance(n)
    finally:
        synth.delete()
    y = 0.5 * (left.astype(np.float64) + right)
    y = y[: int(np.ceil(perf.duration * sr))]
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    y *= 0.9 * 10 ** (perf.gain_db / 20.0) / max(peak, 1e-9)
    return np.clip(y, -1.0, 1.0).astype(np.float32), RenderInfo(path.name, missing)
