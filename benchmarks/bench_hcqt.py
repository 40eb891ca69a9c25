"""Harmonic CQT: six librosa.cqt calls (exact HCQT) vs one stored wide CQT + views.

Prints CPU times (time.process_time, median of --repeats, after one warm-up call each so
numba compilation and first-use costs are not counted), storage sizes against the track's
float32 audio, the pitch error of the views over a set of tones, and what the 8-bit code and
the bin-offset views cost in dB against float32 and against the exact HCQT.

    python benchmarks/bench_hcqt.py [--duration 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import librosa
import numpy as np

from mirpipe.demo.track import compose, render
from mirpipe.storage.hcqt import DB_RANGE, WideCQT, compute_wide_cqt, dequantize_db, harmonic_view, quantize_db


def exact_hcqt(y: np.ndarray, g: WideCQT) -> list[np.ndarray]:
    """Six librosa.cqt calls, (T, n_bins) dB each (same dB convention as compute_wide_cqt)."""
    out = []
    for h in g.harmonics:
        C = librosa.cqt(
            y, sr=g.sr, hop_length=g.hop_length, fmin=h * g.fmin, n_bins=g.n_bins, bins_per_octave=g.bins_per_octave, tuning=0.0
        )
        out.append(librosa.amplitude_to_db(np.abs(C), ref=1.0, amin=1e-5, top_db=None).T)
    return out


def cpu_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def pitch_errors(g: WideCQT, tones, shifts, quantized: bool) -> float:
    """Max |cents| of the parabolic peak of every in-range (tone, shift, harmonic) view."""
    worst = 0.0
    bpo = g.bins_per_octave
    for f in tones:
        y = (0.5 * np.sin(2 * np.pi * f * np.arange(int(2 * g.sr)) / g.sr)).astype(np.float32)
        slab = compute_wide_cqt(y, g)
        if quantized:
            slab = dequantize_db(quantize_db(slab))
        mid = slab.shape[0] // 2
        for n in shifts:
            view = harmonic_view(slab, g, shift=n)
            target = f * 2.0 ** (n / 12)
            for i, h in enumerate(g.harmonics):
                k_exp = bpo * np.log2(target / (h * g.fmin))
                if not 2 <= k_exp <= g.n_bins - 3:
                    continue
                v = view[i, mid]
                k = int(np.argmax(v))
                a, b, c = v[k - 1], v[k], v[k + 1]
                d = a - 2 * b + c
                kk = k + (0.5 * (a - c) / d if d != 0 else 0.0)
                worst = max(worst, abs(1200 * np.log2(h * g.fmin * 2 ** (kk / bpo) / target)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="approximate track length (s)")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="n_fft=.*too large", category=UserWarning)

    g = WideCQT()
    score = compose(args.index, args.seed, False, args.duration - 2, args.duration + 2)
    y = render(score, g.sr, args.seed, args.index).astype(np.float32)
    print(f"track: {len(y) / g.sr:.2f} s at {g.sr} Hz, peak |y| {np.abs(y).max():.3f}")
    print(f"geometry: {g.to_json()}")
    print(
        f"  wide CQT: {g.n_wide_bins} bins from {g.wide_fmin:.3f} Hz to {g.frequencies()[-1]:.1f} Hz "
        f"(wanted {g.n_wanted_bins}, cut below Nyquist), margin {g.margin_bins} bins = +-{g.margin_semitones} st"
    )

    t_exact = cpu_time(lambda: exact_hcqt(y, g), args.repeats)
    t_wide = cpu_time(lambda: compute_wide_cqt(y, g), args.repeats)
    wide = compute_wide_cqt(y, g)
    t_view = cpu_time(lambda: [harmonic_view(wide, g, shift=n) for n in range(-6, 7)], args.repeats) / 13
    print(f"\nCPU time (median of {args.repeats}, process_time):")
    print(f"  (a) exact HCQT, 6 x librosa.cqt (360 bins)  {t_exact:8.3f} s")
    print(f"  (b) compute_wide_cqt                        {t_wide:8.3f} s")
    print(f"  speed ratio a/b                             {t_exact / t_wide:8.2f}x  (target >= 5x)")
    print(f"  harmonic_view, whole track, one shift       {t_view * 1e3:8.2f} ms")

    T = wide.shape[0]
    audio_bytes = len(y) * 4
    b16 = T * g.n_wide_bins * 2
    b8 = T * g.n_wide_bins
    print(f"\nstorage for {T} frames (audio float32: {audio_bytes / 1e6:.2f} MB):")
    print(f"  wide float16: {b16 / 1e6:6.2f} MB = {b16 / audio_bytes:.3f} x audio")
    print(f"  wide uint8:   {b8 / 1e6:6.2f} MB = {b8 / audio_bytes:.3f} x audio  (all 13 shifts -6..+6; target <= 0.6x)")
    hx = T * len(g.harmonics) * g.n_bins
    print(
        f"  for comparison, exact HCQT uint8 per shift: {hx / audio_bytes:.3f} x audio, "
        f"x13 shifts: {13 * hx / audio_bytes:.2f} x audio"
    )

    tones = (55.0, 77.7, 97.0, 130.0, 180.3, 261.6, 440.0, 612.4, 1000.0)
    shifts = tuple(range(-6, 7))
    print(f"\npitch error of the views (tones {tones} Hz, shifts -6..+6, every in-range harmonic):")
    print(f"  float32 wide: max {pitch_errors(g, tones, shifts, False):.2f} cents")
    print(f"  uint8 wide:   max {pitch_errors(g, tones, shifts, True):.2f} cents")

    q = dequantize_db(quantize_db(wide))
    err = np.abs(q - wide)
    inside = (wide >= DB_RANGE[0]) & (wide <= DB_RANGE[1])
    print(f"\nquantization (DB_RANGE {DB_RANGE}, step {(DB_RANGE[1] - DB_RANGE[0]) / 255:.3f} dB) over the track:")
    print(
        f"  uint8 vs float32: mean |dB| {err.mean():.3f}, max {err.max():.3f}; "
        f"{100 * (1 - inside.mean()):.3f}% of values outside the range; track dB range "
        f"[{wide.min():.1f}, {wide.max():.1f}]"
    )

    exact = exact_hcqt(y, g)
    v32 = harmonic_view(wide, g)
    v8 = harmonic_view(q, g)
    edge = 20  # frames dropped at each end
    print(
        "\nview vs exact HCQT, mean |dB| per harmonic (frames away from the ends, bins below Nyquist;"
        "\n  'loud' = bins within 30 dB of the exact channel's maximum, 'all' = every bin):"
    )
    print(f"  {'h':>4} {'f32 loud':>9} {'u8 loud':>9} {'f32 all':>9} {'u8 all':>9}")
    for i, h in enumerate(g.harmonics):
        e = exact[i][edge:-edge]
        cols = h * g.fmin * 2.0 ** (np.arange(g.n_bins) / g.bins_per_octave) < g.sr / 2
        loud = (e >= e.max() - 30) & cols
        allb = np.broadcast_to(cols, e.shape)
        d32 = np.abs(v32[i, edge:-edge] - e)
        d8 = np.abs(v8[i, edge:-edge] - e)
        print(f"  {h:>4} {d32[loud].mean():9.3f} {d8[loud].mean():9.3f} {d32[allb].mean():9.3f} {d8[allb].mean():9.3f}")


if __name__ == "__main__":
    main()
