"""Importers through mirdata (1.0) loaders: the dataset as its loader lays it out under a data
home, its annotations read with the loader's own parsers, converted to JAMS.

mirdata 1.0 ships no dataset index inside the package: ``Dataset.download()`` fetches it (with
the data) into mirdata's install folder. Nothing is downloaded here; the index is, in order:

1. the file given with ``--index`` (an index JSON fetched elsewhere);
2. mirdata's own, when it was fetched once (``mirdata.initialize(NAME).download(["index"])``);
3. ``<data home>/<index file name>``, when the user put it there;
4. otherwise built from the files under the data home, following the loader's layout (what
   mirdata's ``scripts/make_<name>_index.py`` do), with no checksums.

With a real index the dataset's own track list is authoritative: a file it names that is not
under the data home is a classified failure of that track; ``--checksums`` compares every file's
md5 with the index.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from mirpipe.audio.io import AUDIO_EXTENSIONS
from mirpipe.errors import ConfigurationError

from . import IMPORTERS
from .base import AnnotationFile, Importer, Listing, TrackSource
from .convert import contour, events, intervals, tag
from .errors import AnnotationFormatError, IndexEntryError


class MirdataMissingError(ConfigurationError):
    """mirdata is not installed (a usage error: the CLI exits 2 with the install line)."""


def _mirdata():
    try:
        import mirdata
    except ImportError:
        raise MirdataMissingError(
            "`mirpipe import mirdata` needs the mirdata package (1.0): pip install 'mirpipe[datasets]'"
        ) from None
    return mirdata


def _rel(root: Path, path: Path | None) -> str | None:
    return None if path is None else os.path.relpath(path, root).replace(os.sep, "/")


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


class MirdataImporter(Importer):
    """One mirdata dataset: ``index_from_layout`` (what the index would hold, built from the files)
    and ``source`` (one mirdata Track as a ``TrackSource``)."""

    kind = "mirdata"
    layout: ClassVar[str] = ""  # where the loader expects the files (README, --help)

    def index_from_layout(self, root: Path) -> dict[str, Any]:  # pragma: no cover - per dataset
        raise NotImplementedError

    def source(self, dataset, track, root: Path) -> TrackSource:  # pragma: no cover - per dataset
        raise NotImplementedError

    def check_data_home(self, root: Path) -> None:
        """A usage error (``ConfigurationError``) when something the whole dataset needs is missing."""

    # -- the index -------------------------------------------------------------------------------

    def resolve_index(self, dataset, root: Path, explicit: Path | None) -> tuple[dict[str, Any], str]:
        """The index (mirdata's JSON format) and a line saying where it came from."""
        filename = dataset._index_data.filename
        candidates = []
        if explicit is not None:
            candidates.append((Path(explicit), "given with --index"))
        else:
            candidates += [(Path(dataset.index_path), "mirdata's own"), (root / filename, "found in the data home")]
        for path, how in candidates:
            if path.is_file():
                return _read_index(path), f"index: {path} ({how}, version {dataset.version})"
            if explicit is not None:
                raise ConfigurationError(f"--index {path}: no such file")
        index = self.index_from_layout(root)
        if not index["tracks"]:
            raise ConfigurationError(
                f"{self.name}: no tracks under {root} in the loader's layout ({self.layout}); "
                f"is --data-home the folder that holds them?"
            )
        return index, (
            f"index: built from the files under {root} ({len(index['tracks'])} tracks, no checksums): "
            f"mirdata's {filename} is not installed (with network access, "
            f"mirdata.initialize({self.name!r}).download(['index']) fetches it; or pass it with --index)"
        )

    # -- listing ---------------------------------------------------------------------------------

    def list_tracks(self, root: Path, index: Path | None = None, version: str = "default", **options) -> Listing:
        mirdata = _mirdata()
        root = Path(root)
        if not root.is_dir():
            raise ConfigurationError(f"--data-home {root}: not a folder")
        module = importlib.import_module(f"mirdata.datasets.{self.name}")
        dataset = module.Dataset(data_home=str(root), version=version)
        data, how = self.resolve_index(dataset, root, index)
        dataset.__dict__["_index"] = data  # mirdata's cached_property: what `_index` would have read
        self.check_data_home(root)
        listing = Listing(
            tracks=[], notes=[how], source=f"mirdata {self.name} {dataset.version} at {root} (mirdata {mirdata.__version__})"
        )
        for tid in dataset.track_ids:
            entry = data["tracks"][tid]
            try:
                src = self.source(dataset, dataset.track(tid), root)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                listing.failures.append(
                    (
                        f"{self.name}/{tid}",
                        IndexEntryError(
                            root, f"track {tid!r}: the loader cannot use its index entry: {type(exc).__name__}: {exc}"
                        ),
                    )
                )
                continue
            src.provenance.update(dataset=self.name, version=dataset.version, track_id=tid, mirdata=mirdata.__version__)
            src.checksums = {
                str(root / rel): md5
                for rel, md5 in (v for v in entry.values() if isinstance(v, list) and len(v) == 2)
                if rel and md5
            }
            listing.tracks.append(src)
        return listing


def _read_index(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: not a readable mirdata index: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), dict):
        raise ConfigurationError(f"{path}: not a mirdata index (no 'tracks' mapping)")
    return data


def _annotation(path: str | None, reader, what: str, required: bool = True) -> list[AnnotationFile]:
    return [] if path is None else [AnnotationFile(Path(path), reader, what, required)]


# -- chords: the Beatles (Isophonics) ----------------------------------------------------------------


def beatles_track_id(album: str, title: str) -> str:
    """mirdata's Beatles ids: album number and track number ("0111"); the White Album's two
    discs "10" + disc + track ("10212")."""
    if "CD" in title:
        return f"10{album.split('_')[0][-1]}{title.split('_')[2][:2]}"
    return f"{album.split('_')[0][:2]}{title.split('_')[0]}"


@IMPORTERS.register
class Beatles(MirdataImporter):
    name = "beatles"
    summary = "Isophonics Beatles: chords (chord), keys (key_mode), sections (segment_open), beats (beat)"
    layout = "audio/<album>/<title>.wav, annotations/{chordlab,keylab,seglab}/The Beatles/<album>/<title>.lab, annotations/beat/The Beatles/<album>/<title>.txt"
    ARTIST = "The Beatles"

    def index_from_layout(self, root: Path) -> dict[str, Any]:
        found: dict[tuple[str, str], Path | None] = {}
        audio: Path | None  # (a file in the first loop, maybe None in the last)
        for album_dir in sorted((root / "audio").glob("*")):
            for audio in _audio_files(album_dir):
                found[(album_dir.name, audio.stem)] = audio
        for lab in sorted((root / "annotations" / "chordlab" / self.ARTIST).glob("*/*.lab")):
            found.setdefault((lab.parent.name, lab.stem), None)
        tracks = {}
        for (album, title), audio in sorted(found.items()):
            ann = root / "annotations"

            def part(kind: str, ext: str, always: bool = False, ann: Path = ann, album: str = album, title: str = title) -> list:
                path = ann / kind / self.ARTIST / album / f"{title}{ext}"
                return [_rel(root, path) if (path.exists() or always) else None, None]

            tracks[beatles_track_id(album, title)] = {
                "audio": [_rel(root, audio or root / "audio" / album / f"{title}.wav"), None],
                "beat": part("beat", ".txt"),
                "chords": part("chordlab", ".lab"),
                "keys": part("keylab", ".lab"),
                "sections": part("seglab", ".lab", always=True),  # mirdata's Track takes its title from it
            }
        return {"version": "built by mirpipe", "tracks": tracks}

    def source(self, dataset, track, root: Path) -> TrackSource:
        from mirdata.datasets import beatles as m

        where = f"mirdata beatles {dataset.version}"

        def chords(p: Path, d: float):
            c = m.load_chords(str(p))
            return [intervals("chord", c.intervals, list(c.labels), d, where)]

        def keys(p: Path, d: float):
            k = m.load_key(str(p))
            return [intervals("key_mode", k.intervals, list(k.keys), d, where)] if len(k.keys) else []

        def sections(p: Path, d: float):
            s = m.load_sections(str(p))
            return [intervals("segment_open", s.intervals, list(s.labels), d, where)]

        def beats(p: Path, d: float):
            b = m.load_beats(str(p))
            return [events("beat", b.times, [int(x) for x in b.positions], d, where)]

        parts = (
            _annotation(track.chords_path, chords, "chords")
            + _annotation(track.keys_path, keys, "keys", required=False)
            + _annotation(track.sections_path, sections, "sections", required=False)
            + _annotation(track.beats_path, beats, "beats", required=False)
        )
        notes = [] if track.chords_path else [f"beatles/{track.track_id}: the index names no chord file"]
        return TrackSource(
            track=f"beatles/{track.track_id}",
            audio=Path(track.audio_path),
            annotations=parts,
            title=track.title,
            artist=self.ARTIST,
            notes=notes,
        )


# -- f0: vocadito and MedleyDB-Pitch -------------------------------------------------------------


def _f0(loader, where: str, annotator: str | None = None):
    def read(p: Path, d: float):
        f = loader(str(p))
        return [contour(f.times, f.frequencies, f.voicing > 0, d, where, annotator)]

    return read


def _notes(loader, where: str, annotator: str | None = None):
    def read(p: Path, d: float):
        n = loader(str(p))
        return [] if n is None else [intervals("note_hz", n.intervals, [float(x) for x in n.pitches], d, where, annotator)]

    return read


@IMPORTERS.register
class Vocadito(MirdataImporter):
    name = "vocadito"
    summary = "vocadito solo singing: f0 (pitch_contour), notes of two annotators (note_hz)"
    layout = "Audio/vocadito_<n>.wav, Annotations/F0/vocadito_<n>_f0.csv, Annotations/Notes/vocadito_<n>_notesA1.csv (A2), Annotations/Lyrics/vocadito_<n>_lyrics.txt"

    def index_from_layout(self, root: Path) -> dict[str, Any]:
        ids = {m.group(1) for p in _audio_files(root / "Audio") if (m := re.fullmatch(r"vocadito_(\w+)", p.stem))}
        ids |= {
            m.group(1)
            for p in (root / "Annotations" / "F0").glob("vocadito_*_f0.csv")
            if (m := re.fullmatch(r"vocadito_(\w+)_f0", p.stem))
        }

        audio_files = {p.stem: p for p in _audio_files(root / "Audio")}

        def entry(n: str) -> dict[str, list]:
            audio = audio_files.get(f"vocadito_{n}", root / "Audio" / f"vocadito_{n}.wav")
            files = {
                "f0": root / "Annotations" / "F0" / f"vocadito_{n}_f0.csv",
                "notesA1": root / "Annotations" / "Notes" / f"vocadito_{n}_notesA1.csv",
                "notesA2": root / "Annotations" / "Notes" / f"vocadito_{n}_notesA2.csv",
                "lyrics": root / "Annotations" / "Lyrics" / f"vocadito_{n}_lyrics.txt",
            }
            return {
                "audio": [_rel(root, audio), None],
                **{k: [_rel(root, p) if (p.exists() or k == "f0") else None, None] for k, p in files.items()},
            }

        return {"version": "built by mirpipe", "tracks": {n: entry(n) for n in sorted(ids, key=lambda s: (len(s), s))}}

    def source(self, dataset, track, root: Path) -> TrackSource:
        from mirdata.datasets import vocadito as m

        where = f"mirdata vocadito {dataset.version}"
        parts = (
            _annotation(track.f0_path, _f0(m.load_f0, where), "f0")
            + _annotation(track.notes_a1_path, _notes(m.load_notes, where, "A1"), "notes A1", required=False)
            + _annotation(track.notes_a2_path, _notes(m.load_notes, where, "A2"), "notes A2", required=False)
        )
        return TrackSource(
            track=f"vocadito/{track.track_id}",
            audio=Path(track.audio_path),
            annotations=parts,
            title=f"vocadito_{track.track_id}",
        )


@IMPORTERS.register
class MedleyDBPitch(MirdataImporter):
    name = "medleydb_pitch"
    summary = "MedleyDB-Pitch stems: f0 (pitch_contour), pYIN notes (note_hz)"
    layout = (
        "audio/<id>.wav, pitch/<id>.csv, medleydb-pitch-pyin-notes/<id>_vamp_pyin_pyin_notes.csv, medleydb_pitch_metadata.json"
    )

    def index_from_layout(self, root: Path) -> dict[str, Any]:
        audio = {p.stem: p for p in _audio_files(root / "audio")}
        ids = set(audio) | {p.stem for p in (root / "pitch").glob("*.csv")}
        tracks = {}
        for tid in sorted(ids):
            notes = root / "medleydb-pitch-pyin-notes" / f"{tid}_vamp_pyin_pyin_notes.csv"
            tracks[tid] = {
                "audio": [_rel(root, audio.get(tid, root / "audio" / f"{tid}.wav")), None],
                "pitch": [_rel(root, root / "pitch" / f"{tid}.csv"), None],
                "notes_pyin": [_rel(root, notes) if notes.exists() else None, None],
            }
        return {"version": "built by mirpipe", "tracks": tracks}

    def source(self, dataset, track, root: Path) -> TrackSource:
        from mirdata.datasets import medleydb_pitch as m

        where = f"mirdata medleydb_pitch {dataset.version}"
        try:  # title and artist live in medleydb_pitch_metadata.json; the import does not need them
            title, artist = track.title, track.artist
        except (FileNotFoundError, AttributeError, KeyError):
            title = artist = None
        parts = _annotation(track.pitch_path, _f0(m.load_pitch, where), "f0") + _annotation(
            getattr(track, "notes_pyin_path", None), _notes(m.load_notes, where, "pyin"), "pYIN notes", required=False
        )
        return TrackSource(
            track=f"medleydb_pitch/{track.track_id}", audio=Path(track.audio_path), annotations=parts, title=title, artist=artist
        )


# -- instruments: Medley-solos-DB ----------------------------------------------------------------

MEDLEY_SOLOS_SPLITS = {"training": "train", "validation": "val", "test": "test"}
_MSDB_NAME = re.compile(r"Medley-solos-DB_(training|validation|test)-(\d+)_([0-9a-fA-F-]+)")


@IMPORTERS.register
class MedleySolosDB(MirdataImporter):
    name = "medley_solos_db"
    summary = "Medley-solos-DB clips: the instrument (tag_open over the clip), the official split (sandbox.split)"
    layout = "audio/Medley-solos-DB_<subset>-<instrument id>_<uuid4>.wav, annotation/Medley-solos-DB_metadata.csv"
    METADATA = Path("annotation") / "Medley-solos-DB_metadata.csv"

    def check_data_home(self, root: Path) -> None:
        if not (root / self.METADATA).is_file():
            raise ConfigurationError(
                f"medley_solos_db: {root / self.METADATA} is missing: it holds every clip's instrument and split"
            )

    def index_from_layout(self, root: Path) -> dict[str, Any]:
        import csv

        tracks: dict[str, dict[str, list]] = {}
        for p in _audio_files(root / "audio"):
            if (m := _MSDB_NAME.fullmatch(p.stem)) is not None:
                tracks[m.group(3)] = {"audio": [_rel(root, p), None]}
        meta = root / self.METADATA
        if meta.is_file():
            with open(meta, newline="") as fh:
                for row in csv.DictReader(fh):
                    uuid = row.get("uuid4")
                    if uuid and uuid not in tracks:
                        name = f"Medley-solos-DB_{row.get('subset')}-{row.get('instrument_id')}_{uuid}.wav"
                        tracks[uuid] = {"audio": [_rel(root, root / "audio" / name), None]}
        return {"version": "built by mirpipe", "tracks": dict(sorted(tracks.items()))}

    def source(self, dataset, track, root: Path) -> TrackSource:
        meta = dataset._metadata.get(track.track_id)  # read by mirdata's loader from the CSV
        where = f"mirdata medley_solos_db {dataset.version}"
        csv_path = root / self.METADATA
        if meta is None:

            def missing(p: Path, d: float):
                raise AnnotationFormatError(p, f"no row for clip {track.track_id}")

            return TrackSource(
                track=f"medley_solos_db/{track.track_id}",
                audio=Path(track.audio_path),
                annotations=[AnnotationFile(csv_path, missing, "instrument")],
            )
        instrument, subset = meta["instrument"], meta["subset"]
        split = MEDLEY_SOLOS_SPLITS.get(subset)
        notes = (
            []
            if split
            else [
                f"medley_solos_db/{track.track_id}: subset {subset!r} is not a split mirpipe knows; the split is left to ingest"
            ]
        )
        return TrackSource(
            track=f"medley_solos_db/{track.track_id}",
            audio=Path(track.audio_path),
            annotations=[AnnotationFile(csv_path, lambda p, d: [tag(instrument, d, where)], "instrument")],
            split=split,
            title=track.track_id,
            notes=notes,
            provenance={"instrument_id": meta["instrument_id"], "song_id": meta["song_id"]},
        )
