"""The corpus writer every importer shares: per track, check the files, read the audio's duration
from its header, read and validate the annotations, then link the audio in place and write the
JAMS beside the link (the JAMS last: it is what makes the pair a track).

Why a symlink and not a JAMS that points at the audio: ``ingest`` pairs audio and JAMS by their
path in the corpus folder (``mirpipe/corpus.py``) and reads the audio it paired, so a link
makes an imported corpus an ordinary corpus: scan, ingest, change detection (``os.stat``
follows the link to the original), features and ``predict`` need nothing new, and nothing is
copied. The JAMS also records the original path (``sandbox.mirpipe_import.audio``).

A track whose files are missing, unreadable or unparseable is a classified failure naming the
file; the other tracks are imported. Rerunning an import rewrites each track atomically and
removes what an earlier import wrote for a track that now fails.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jams

from mirpipe import errors as stage_errors
from mirpipe.audio.io import AUDIO_EXTENSIONS, decode_errors
from mirpipe.records import Record
from mirpipe.storage.atomic import temp_path, write_bytes

from .base import Listing, TrackSource
from .convert import check_annotation
from .errors import AnnotationFormatError, ChecksumError, MissingFileError

MARK = "mirpipe_import"  # the sandbox key an imported JAMS carries


@dataclass(frozen=True)
class ImportFailure(Record):
    track: str
    error_class: str
    file: str | None
    message: str


@dataclass(frozen=True)
class ImportReport(Record):
    """What an import did: counts, each failure, each warning, and how the source was read."""

    importer: str
    source: str
    out: str
    total: int
    imported: int
    failed: list[ImportFailure]
    warnings: list[str]
    notes: list[str]
    seconds: float

    def lines(self) -> list[str]:
        """The human summary."""
        out = [f"mirpipe import: {self.source}", *(f"  {n}" for n in self.notes)]
        out += [f"  WARNING {w}" for w in self.warnings]
        out += [f"  FAILED {f.track}: {f.error_class}: {f.file or ''} {f.message}" for f in self.failed]
        out.append(
            f"mirpipe import: {self.imported} imported, {len(self.failed)} failed, {len(self.warnings)} warnings "
            f"of {self.total} tracks in {self.seconds:.1f}s -> {self.out}"
        )
        return out


def audio_duration(path: Path) -> float:
    """Seconds of audio from the file's header (soundfile), else from a decoder (audioread)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        frames, sr = int(info.frames), int(info.samplerate)
        seconds = frames / sr if sr > 0 else 0.0
    except (sf.SoundFileError, OSError) as exc:  # not a container libsndfile reads: try a decoder
        try:
            import librosa

            seconds = float(librosa.get_duration(path=str(path)))
        except decode_errors() + (OSError,):  # the decoders' own errors only: a bug or MemoryError propagates
            cls = (
                stage_errors.AudioDecodeError
                if path.suffix.lower() in (".wav", ".flac", ".ogg")
                else stage_errors.UnsupportedFormatError
            )
            raise cls(path, f"cannot read the audio: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not seconds > 0:
        raise stage_errors.EmptyAudioError(path, "no samples")
    return float(seconds)


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _check_file(path: Path, what: str) -> None:
    if not os.path.exists(path):
        if what == "audio":
            raise stage_errors.MissingAudioError(path, "the track's audio is not there")
        raise MissingFileError(path, f"the {what} file is not there")
    if os.path.isdir(path):
        raise stage_errors.UnreadableFileError(path, "a folder, not a file")
    if not os.access(path, os.R_OK):
        raise stage_errors.UnreadableFileError(path, "permission denied")


def _safe_track(track: str) -> str:
    parts = track.split("/")
    if not track or track.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"track id {track!r} is not a relative path of visible names")
    return track


def build_jams(src: TrackSource, importer: str, checksums: bool) -> tuple[jams.JAMS, list[str]]:
    """Read and check everything of one track; nothing is written. Returns the JAMS and warnings."""
    warnings = list(src.notes)
    _check_file(src.audio, "audio")
    for path, md5 in src.checksums.items() if checksums else ():
        if os.path.exists(path) and _md5(Path(path)) != md5:
            raise ChecksumError(path, f"md5 differs from the dataset index ({md5}): another version of the file, or damaged")
    duration = audio_duration(src.audio)
    jam = jams.JAMS()
    jam.file_metadata.duration = duration
    jam.file_metadata.title = src.title or src.track.rsplit("/", 1)[-1]
    if src.artist:
        jam.file_metadata.artist = src.artist
    for part in src.annotations:
        try:
            _check_file(part.path, part.what)
            try:
                anns = part.read(part.path, duration)
            except (stage_errors.InputError, PermissionError):
                raise
            # a parser's own error is the file's fault: bad numbers or text (ValueError), missing fields or
            # columns (LookupError), csv and jams errors; jams and mirdata build objects straight from the
            # parsed document, so a malformed one raises TypeError/AttributeError there. MemoryError propagates.
            except (ValueError, LookupError, TypeError, AttributeError, EOFError, OSError, csv.Error, jams.JamsError) as exc:
                raise AnnotationFormatError(
                    part.path, f"{part.what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                ) from None
            for ann in anns:
                check_annotation(ann, part.path)
        except stage_errors.InputError as exc:
            if part.required:
                raise
            warnings.append(f"{src.track}: {part.what} left out: {type(exc).__name__}: {exc}")
            continue
        jam.annotations.extend(anns)
    if src.split is not None:
        jam.sandbox.split = src.split
    jam.sandbox.update(**{MARK: {"importer": importer, "audio": str(Path(os.path.abspath(src.audio))), **src.provenance}})
    try:
        jam.validate(strict=True)
    except jams.SchemaError as exc:
        raise AnnotationFormatError(src.audio, f"the JAMS does not validate: {str(exc).splitlines()[0][:300]}") from None
    if not jam.annotations:
        warnings.append(f"{src.track}: no annotations (imported for prediction; the tasks have nothing to learn from it)")
    return jam, warnings


def link_audio(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (absolute), replacing an earlier link atomically; never a real file."""
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a link an import made; move it away")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(link)
    os.symlink(os.path.abspath(target), tmp)
    os.replace(tmp, link)


def _links(out: Path, track: str) -> list[Path]:
    """The audio links an import made for ``track`` (any audio extension)."""
    base = out / track
    if not base.parent.is_dir():
        return []
    return [p for p in base.parent.iterdir() if p.is_symlink() and p.stem == base.name and p.suffix.lower() in AUDIO_EXTENSIONS]


def _remove_imported(out: Path, track: str) -> None:
    """What an earlier import wrote for ``track`` (its JAMS, if it carries the import mark, and its links)."""
    try:
        _safe_track(track)
    except ValueError:
        return
    jams_path = out / f"{track}.jams"
    try:
        if jams_path.is_file() and f'"{MARK}"' in jams_path.read_text(errors="replace"):
            jams_path.unlink()
    except OSError:
        pass
    for link in _links(out, track):
        link.unlink(missing_ok=True)


def write_track(src: TrackSource, out: Path, importer: str, checksums: bool = False) -> list[str]:
    """Import one track into ``out``; returns its warnings, raises a classified error."""
    track = _safe_track(src.track)
    jam, warnings = build_jams(src, importer, checksums)
    link = out / f"{track}{src.audio.suffix}"
    for stale in _links(out, track):
        if stale != link:
            stale.unlink()
    link_audio(src.audio, link)
    write_bytes(out / f"{track}.jams", jam.dumps().encode())
    return warnings


def import_listing(
    listing: Listing, out: Path, importer: str, checksums: bool = False, progress: Callable[[int], object] | None = None
) -> ImportReport:
    """Write every listed track into ``out``; failures are recorded, never stop the rest."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    failed = [_failure(track, exc) for track, exc in listing.failures]
    warnings: list[str] = []
    imported = 0
    seen: set[str] = set()
    for src in listing.tracks:
        try:
            if src.track in seen:
                raise stage_errors.DuplicateTrackError(src.audio, f"track id {src.track!r} is listed twice")
            seen.add(src.track)
            warnings.extend(write_track(src, out, importer, checksums))
            imported += 1
        except (stage_errors.InputError, OSError, ValueError) as exc:
            failed.append(_failure(src.track, exc))
            if not isinstance(exc, (FileExistsError, stage_errors.DuplicateTrackError)):
                _remove_imported(out, src.track)
        if progress is not None:
            progress(1)
    for track, _ in listing.failures:
        _remove_imported(out, track)
    return ImportReport(
        importer=importer,
        source=listing.source,
        out=str(out),
        total=len(listing.tracks) + len(listing.failures),
        imported=imported,
        failed=failed,
        warnings=warnings,
        notes=list(listing.notes),
        seconds=round(time.perf_counter() - t0, 3),
    )


def _failure(track: str, exc: BaseException) -> ImportFailure:
    path = getattr(exc, "path", None) or getattr(exc, "filename", None)
    message = getattr(exc, "reason", None) or (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
    return ImportFailure(track=track, error_class=type(exc).__name__, file=str(path) if path else None, message=str(message))
