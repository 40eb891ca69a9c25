"""benchmarks/bench_chord_probe.py: the probes are labelled as played, frames are counted as they
lie, and a whole run on a tiny untrained model gives bench_real's own figures per file."""

from __future__ import annotations

import json

import jams
import numpy as np
import pytest
from test_bench_real import load_script, tiny_bundle

from mirpipe.demo import soundfont
from mirpipe.models.chord import encode_label


def load_probe():
    return load_script("bench_chord_probe")


def test_probes_are_labelled_as_played():
    probe = load_probe()
    for kind in probe.KINDS:
        perf = probe.compose_probe(kind, 0, 4242, 22050, "piano")
        segs = perf.chords
        assert segs[0].label == "N" and all(abs(a.end - b.start) < 1e-9 for a, b in zip(segs, segs[1:]))
        chords = [s for s in segs if s.label != "N"]
        assert len(chords) == (12 if kind == "isolated" else 24)
        if kind == "isolated":  # every chord followed by silence
            assert all(segs[i + 1].label == "N" for i, s in enumerate(segs[:-1]) if s.label != "N")
        else:
            assert all(abs((s.end - s.start) - 0.75) < 0.01 for s in chords)
        ons = [(e.time, e.a) for e in perf.events if e.kind == "on"]
        for s in chords:
            keys = [k for t, k in ons if s.start - 1e-9 <= t < s.end - 1e-9]
            _, pcs, bass, _ = encode_label(s.label)
            assert s.label.split(":")[1].split("/")[0] in ("maj", "min")
            assert {k % 12 for k in keys} == set(np.flatnonzero(pcs)) and bass == min(keys) % 12


def test_frame_counts():
    probe = load_probe()
    ref = jams.Annotation(namespace="chord", time=0, duration=2.0)
    ref.append(time=0.0, duration=1.0, value="C:maj")
    ref.append(time=1.0, duration=1.0, value="N")
    est = jams.Annotation(namespace="chord", time=0, duration=2.0)
    est.append(time=0.0, duration=0.5, value="N")
    est.append(time=0.5, duration=0.25, value="G:maj")
    est.append(time=0.75, duration=0.75, value="C:maj")
    est.append(time=1.5, duration=0.5, value="N")
    c = probe.frame_counts(ref, est, step=0.05)
    assert c == {"chord_frames": 20, "n_frames": 20, "chord_called_n": 10, "n_called_chord": 10, "root_right": 5}


@pytest.mark.skipif(soundfont.available(["TimGM6mb.sf2"]) is not None, reason="FluidSynth or TimGM6mb unavailable")
def test_a_run_scores_every_probe_as_bench_real_does(tmp_path, capsys):
    probe = load_probe()
    model = tiny_bundle(tmp_path / "tiny.mirpipe")
    out = tmp_path / "probe.json"
    rc = probe.main(["--model", str(model), "--per-kind", "1", "--folder", str(tmp_path / "probes"), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {r["kind"] for r in report["files"]} == {"isolated", "fast"} and len(report["files"]) == 2
    assert sorted(p.name for p in (tmp_path / "probes").iterdir()) == [
        "probe-fast-00.flac", "probe-fast-00.jams", "probe-isolated-00.flac", "probe-isolated-00.jams",
    ]  # fmt: skip
    real = probe._bench_real()
    again = real.run(
        real.parse_args(["--model", str(model), "--folder", str(tmp_path / "probes"), "--no-pyin", "--out", str(tmp_path / "e")]),
        tmp_path / "e",
    )
    for row in report["files"]:
        same = next(f for f in again["files"] if f["file"] == row["file"])
        assert row["majmin"] == pytest.approx(same["tasks"]["chord"]["scores"]["majmin"]["score"])
        s = report["summary"][row["kind"]]
        f = row["frames"]
        assert s["chord_called_n"] == pytest.approx(f["chord_called_n"] / f["chord_frames"])
        assert s["majmin"] == pytest.approx(row["majmin"])
    assert "| isolated | 1 |" in capsys.readouterr().out
