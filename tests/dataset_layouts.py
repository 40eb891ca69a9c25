"""Tiny datasets in their mirdata loaders' layouts (and a plain folder), for the import tests:
a few seconds of synthesized audio per track and annotation files in each dataset's own format."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
NOTE_HZ = {"C": 261.63, "E": 329.63, "G": 392.0, "A": 440.0, "F": 349.23}


def tone(path: Path, seconds: float = 4.0, freqs=(261.63, 329.63, 392.0), sr: int = SR) -> Path:
    """A chord of decaying harmonic tones (audible, never silent)."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * k * t) / k for f in freqs for k in (1, 2, 3))
    y = 0.3 * y / np.max(np.abs(y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BEATLES_TRACKS = {  # (album, title): chords
    ("01_-_Please_Please_Me", "11_-_Do_You_Want_To_Know_A_Secret"): [(0.0, 0.5, "N"), (0.5, 2.2, "E:min"), (2.2, 4.0, "G")],
    ("10CD2_-_The_Beatles", "CD2_-_12_-_Revolution_9"): [(0.0, 2.0, "C"), (2.0, 4.0, "A:min7/b3")],
    ("03_-_A_Hard_Day's_Night", "01_-_A_Hard_Day's_Night"): [(0.0, 1.9, "G:7(b9)"), (1.9, 4.0, "F:maj")],
}


def beatles(root: Path) -> dict[str, dict]:
    """Isophonics layout; returns the mirdata-style index of what it wrote (with md5s)."""
    index = {}
    for (album, title), chords in BEATLES_TRACKS.items():
        audio = tone(root / "audio" / album / f"{title}.wav")
        ann = root / "annotations"
        lab = _write(
            ann / "chordlab" / "The Beatles" / album / f"{title}.lab", "".join(f"{s:.6f} {e:.6f} {c}\n" for s, e, c in chords)
        )
        key = _write(ann / "keylab" / "The Beatles" / album / f"{title}.lab", "0.000\t4.000\tKey\tE\n")
        seg = _write(ann / "seglab" / "The Beatles" / album / f"{title}.lab", "0.000\t0.500\t\tsilence\n0.500\t4.000\t\tverse\n")
        beat = _write(
            ann / "beat" / "The Beatles" / album / f"{title}.txt",
            "".join(f"{0.5 + 0.5 * i:.3f}\t{(i % 4) + 1}\n" for i in range(6)),
        )
        from mirpipe.importers.mirdata_loaders import beatles_track_id

        rel = lambda p: str(p.relative_to(root))
        index[beatles_track_id(album, title)] = {
            "audio": [rel(audio), md5(audio)],
            "beat": [rel(beat), md5(beat)],
            "chords": [rel(lab), md5(lab)],
            "keys": [rel(key), md5(key)],
            "sections": [rel(seg), md5(seg)],
        }
    return {"version": "1.2", "tracks": index}


def vocadito(root: Path, n: int = 2) -> None:
    """vocadito layout: Audio/, Annotations/F0|Notes|Lyrics, vocadito_metadata.csv."""
    rows = []
    for i in range(1, n + 1):
        hz = 220.0 * 2 ** (i / 12)
        tone(root / "Audio" / f"vocadito_{i}.wav", seconds=4.0, freqs=(hz,))
        times = np.arange(0, 4.0, 0.0058)
        f0 = np.where((times > 0.5) & (times < 3.5), hz, 0.0)
        _write(root / "Annotations" / "F0" / f"vocadito_{i}_f0.csv", "".join(f"{t:.4f},{f:.3f}\n" for t, f in zip(times, f0)))
        for who in ("A1", "A2"):
            _write(root / "Annotations" / "Notes" / f"vocadito_{i}_notes{who}.csv", f"0.5,{hz:.3f},1.5\n2.0,{hz * 1.5:.3f},1.5\n")
        _write(root / "Annotations" / "Lyrics" / f"vocadito_{i}_lyrics.txt", "la la la\n")
        rows.append({"track_id": str(i), "singer_id": f"S{i}", "average_pitch": "57", "language": "English"})
    with open(root / "vocadito_metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["track_id", "singer_id", "average_pitch", "language"])
        w.writeheader()
        w.writerows(rows)


MSDB_CLIPS = [  # subset, instrument, instrument_id, song_id, uuid4
    ("training", "flute", 3, 210, "d07b1fc0-567d-52c2-fef4-239f31c9d40e"),
    ("training", "piano", 4, 11, "0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3"),
    ("validation", "violin", 7, 42, "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"),
    ("test", "clarinet", 0, 7, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"),
]


def medley_solos_db(root: Path, clips=MSDB_CLIPS) -> None:
    """Medley-solos-DB layout: audio/Medley-solos-DB_<subset>-<id>_<uuid>.wav, annotation/*_metadata.csv."""
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    with open(root / "annotation" / "Medley-solos-DB_metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subset", "instrument", "instrument_id", "song_id", "uuid4"])
        for i, (subset, instrument, iid, song, uuid) in enumerate(clips):
            w.writerow([subset, instrument, iid, song, uuid])
            tone(root / "audio" / f"Medley-solos-DB_{subset}-{iid}_{uuid}.wav", seconds=65536 / SR, freqs=(196.0 * 2 ** (i / 7),))


def medleydb_pitch(root: Path) -> None:
    """MedleyDB-Pitch layout: audio/, pitch/, medleydb-pitch-pyin-notes/, metadata JSON."""
    tid = "AClassicEducation_NightOwl_STEM_08"
    tone(root / "audio" / f"{tid}.wav", freqs=(330.0,))
    times = np.arange(0, 4.0, 256 / 44100)
    _write(root / "pitch" / f"{tid}.csv", "".join(f"{t:.6f},{330.0 if 1 < t < 3 else 0.0:.3f}\n" for t in times))
    _write(root / "medleydb-pitch-pyin-notes" / f"{tid}_vamp_pyin_pyin_notes.csv", "1.0,2.0,330.0\n")
    _write(
        root / "medleydb_pitch_metadata.json",
        json.dumps(
            {
                tid: {
                    "audio_path": f"audio/{tid}.wav",
                    "pitch_path": f"pitch/{tid}.csv",
                    "instrument": "male singer",
                    "artist": "AClassicEducation",
                    "title": "NightOwl",
                    "genre": "Singer/Songwriter",
                }
            }
        ),
    )
