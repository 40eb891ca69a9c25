"""How far the instrument CNN's solo-clip accuracy carries to unseen instrument samples.

Reads the solo clips' HCQT views from a finished workdir (features + manifest of a
``mirpipe run`` or ``mirpipe demo`` with the instrument task; the demo renders train/val
with two soundfonts and test with a third, unseen one), pools them to semitones and
~43 frames/s in memory once, then trains ``InstrumentNet`` variants side by side with a
plain loop (softmax head only, pitch shifts -6..6 drawn per patch, no pescador, no
stores), fast enough to compare ideas in ~1 CPU-minute per variant. Every 50 steps it
decodes val and test clips as ``InstrumentTask.decode`` does (argmax of the mean patch
log-probability) and prints clip accuracy and macro-F1: at the last step, at the best
validation step, and the mean of the last five evaluations (30 clips: one clip is 0.033,
so single figures are noisy; compare seeds). ``--schedule cosine`` anneals the learning rate to 0
by the last step, as ``lr_schedule: cosine`` does in training.

    python benchmarks/bench_instrument_transfer.py --workdir DIR [--variants base,global,eq20]
        [--steps 500] [--seeds 0,1] [--train-sources FluidR3_GM.sf2,tonejs-instruments] [--holdout freepats]
        [--schedule constant|cosine] [--patch 44]

Variants: base (pipeline.yaml's augmentation), global (frequency pooled like time),
eq20 (EQ augmentation of 20 dB), noaug, fmask (SpecAugment masks), mixup, hrel
(harmonic channels relative to h=1 added), small (8/16/32 filters, dropout 0.5), fmix / fmix8
(frequency-wise MixStyle on the input patches, p 0.4 / 0.8, alpha 0.3).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mirpipe.models.instrument_net import InstrumentNet
from mirpipe.storage import open_store
from mirpipe.storage.feature_kinds import FEATURE_KINDS

P = 44  # 88 frames at hop 256, pooled by 2
SHIFTS = range(-6, 7)
VARIANTS = {
    "base": {},
    "global": {"pooling": "global"},
    "eq20": {"eq": 20.0},
    "noaug": {"eq": 0.0, "contrast": 0.0, "stretch": 0.0},
    "fmask": {"fmask": 12, "tmask": 10},
    "mixup": {"mixup": 0.4},
    "hrel": {"hrel": True},
    "small": {"channels": [8, 16, 32], "dropout": 0.5},
    "fmix": {"fmix": (0.4, 0.3)},
    "fmix8": {"fmix": (0.8, 0.3)},
}


def freq_mixstyle(x: torch.Tensor, p: float, alpha: float, rng: np.random.Generator) -> torch.Tensor:
    """Frequency-wise MixStyle (Schmid et al., DCASE 2022): with probability ``p`` per batch, each
    patch's per-bin mean and std (over channels and time) are mixed with another patch's, so the
    net sees the spectral colouring of one source on the notes of another."""
    if rng.random() >= p:
        return x
    mu = x.mean(dim=(1, 2), keepdim=True)
    sig = (x.var(dim=(1, 2), keepdim=True) + 1e-6).sqrt()
    lam = torch.from_numpy(rng.beta(alpha, alpha, (len(x), 1, 1, 1)).astype(np.float32))
    perm = torch.from_numpy(rng.permutation(len(x)))
    return (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]


def load(workdir: Path, store_kind: str) -> tuple[dict, list, list[str]]:
    """{(track, shift): pooled (6, T/2, bins/5) float32} for solo clips (train: every shift; others: 0)."""
    cols = json.loads((workdir / "manifest.json").read_text())["columns"]
    store = open_store(store_kind, workdir / "features")
    kind, pool = FEATURE_KINDS.get("hcqt"), nn.AvgPool2d((2, 5), ceil_mode=True)
    data, meta = {}, []
    for t, split, labels in zip(cols["track"], cols["split"], cols["labels"]):
        ls = labels.get("instrument", [])
        if len(ls) != 1:
            continue
        e = store.read_entry(t, ["hcqt"])
        geom, arr = e.attrs["features"]["hcqt"], e.arrays["hcqt"][0]
        for sh in SHIFTS if split == "train" else [0]:
            data[(t, sh)] = pool(torch.from_numpy(np.asarray(kind.view(arr, geom, sh), np.float32))[None])[0].numpy()
        meta.append((t, split, ls[0]))
    return data, meta, sorted({m[2] for m in meta})


def source_of(workdir: Path, track: str) -> str:
    """What rendered a demo clip: its soundfont or sample library (the JAMS sandbox); else 'unknown'."""
    demo = json.loads((workdir / "corpus" / f"{track}.jams").read_text()).get("sandbox", {}).get("mirpipe_demo", {})
    return demo.get("sample_library") or demo.get("soundfont") or "unknown"


class HarmonicRelative(nn.Module):
    """Adds the harmonic channels relative to h=1 (dB differences: pitch-invariant timbre) before the body."""

    def __init__(self, body: nn.Sequential, out: int):
        super().__init__()
        body[0] = nn.Conv2d(11, out, 3, padding=1)
        self.body = body

    def forward(self, x):
        rel = x - x[:, 1:2]
        return self.body(torch.cat([x, rel[:, [0, 2, 3, 4, 5]]], 1))


def run(data, meta, classes, name: str, opts: dict, steps: int, seed: int, schedule: str = "constant", patch: int = P) -> dict:
    from sklearn.metrics import f1_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ci = {c: i for i, c in enumerate(classes)}
    bins = next(iter(data.values())).shape[2]
    train = [(t, ci[lab]) for t, s, lab in meta if s == "train"]
    sets = {s: [(data[(t, 0)], ci[lab]) for t, s2, lab in meta if s2 == s] for s in ("val", "test")}
    net = InstrumentNet(
        6,
        bins,
        len(classes),
        opts.get("channels", [16, 32, 64]),
        64,
        1,
        1,
        opts.get("dropout", 0.3),
        opts.get("pooling", "flatten"),
        opts.get("eq", 10.0),
        opts.get("contrast", 0.3),
        [0.5, 1, 2, 3, 4, 5],
        bins_per_octave=12,
        stretch=opts.get("stretch", 0.3),
    )
    if opts.get("hrel"):
        net.body = HarmonicRelative(net.body, net.body[0].out_channels)
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" else None

    def batch(B=32):
        xs, ys = [], []
        for _ in range(B):
            t, y = train[rng.integers(len(train))]
            x = data[(t, int(rng.choice(list(SHIFTS))))]
            s = int(rng.integers(0, max(1, x.shape[1] - patch + 1)))
            p = x[:, s : s + patch]
            if p.shape[1] < patch:
                p = np.concatenate([p, np.full((6, patch - p.shape[1], bins), x.min(), np.float32)], 1)
            xs.append(p)
            ys.append(y)
        x = torch.from_numpy(np.stack(xs))
        for axis, width in ((3, opts.get("fmask", 0)), (2, opts.get("tmask", 0))):
            for i in range(len(x) if width else 0):
                w = int(rng.integers(0, width + 1))
                a = int(rng.integers(0, x.shape[axis] - w + 1))
                x[i].narrow(axis - 1, a, w).fill_(float(x[i].mean()))
        if opts.get("fmix"):
            x = freq_mixstyle(x, *opts["fmix"], rng)
        return x, torch.tensor(ys)

    def clips(split):
        net.eval()
        pred = []
        with torch.no_grad():
            for x, _ in sets[split]:
                T = x.shape[1]
                starts = list(range(0, max(1, T - patch + 1), patch // 2))
                if T > patch and starts[-1] != T - patch:
                    starts.append(T - patch)
                xb = torch.from_numpy(np.stack([x[:, s : s + patch] for s in starts]))
                pred.append(int(torch.log_softmax(net(xb)["clip"], -1).mean(0).argmax()))
        net.train()
        ys = [y for _, y in sets[split]]
        return float(np.mean(np.array(pred) == ys)), float(f1_score(ys, pred, average="macro", zero_division=0))

    t0, hist = time.process_time(), []
    for step in range(1, steps + 1):
        x, y = batch()
        if opts.get("mixup"):
            lam, perm = float(rng.beta(opts["mixup"], opts["mixup"])), torch.randperm(len(x))
            out = net(lam * x + (1 - lam) * x[perm])["clip"]
            loss = lam * nn.functional.cross_entropy(out, y) + (1 - lam) * nn.functional.cross_entropy(out, y[perm])
        else:
            loss = nn.functional.cross_entropy(net(x)["clip"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step % 50 == 0:
            hist.append((step, *clips("val"), *clips("test")))
    best = max(hist, key=lambda h: h[1])
    tail = np.mean([h[1:] for h in hist[-5:]], axis=0)
    return {"variant": name, "seed": seed, "last": hist[-1], "best": best, "tail": tail, "cpu_s": time.process_time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--store", default="zarr")
    ap.add_argument("--variants", default="base,global,eq20")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", default="0")
    ap.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="learning rate: constant 0.003, or annealed from 0.003 to 0 by the last step",
    )
    ap.add_argument(
        "--patch", type=int, default=P, help=f"patch length in pooled frames (~43/s; default {P}, the ~1 s patches training cuts)"
    )
    ap.add_argument(
        "--train-sources",
        default=None,
        help="comma-separated soundfonts / sample libraries whose training clips are used (default: all)",
    )
    ap.add_argument(
        "--holdout", default=None, help="a source whose clips (every split) become the test set and leave training and validation"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    data, meta, classes = load(args.workdir, args.store)
    sources = {t: source_of(args.workdir, t) for t, _, _ in meta}
    print("training clips per source:", dict(sorted(Counter(sources[t] for t, s, _ in meta if s == "train").items())))
    if args.holdout:
        meta = [(t, "test" if sources[t] == args.holdout else ("val" if s == "test" else s), lab) for t, s, lab in meta]
        print(f"test: the {sum(m[1] == 'test' for m in meta)} clips of {args.holdout}; val: the other val and test clips")
    if args.train_sources:
        keep = set(args.train_sources.split(","))
        meta = [m for m in meta if m[1] != "train" or sources[m[0]] in keep]
        print(f"training on {sorted(keep)}: {sum(m[1] == 'train' for m in meta)} clips")
    print(f"{len(meta)} solo clips, {len(classes)} classes, lr {args.schedule}; columns: val acc/F1, test acc/F1")
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run(data, meta, classes, name, VARIANTS[name], args.steps, seed, args.schedule, args.patch)
            fmt = lambda h: f"{h[0]:.3f} {h[1]:.3f} | {h[2]:.3f} {h[3]:.3f}"
            print(
                f"{name:8s} seed {seed}: last {fmt(r['last'][1:])}   best-val (step {r['best'][0]}) {fmt(r['best'][1:])}   "
                f"mean of last 5 {fmt(r['tail'])}   {r['cpu_s']:.0f} CPU-s",
                flush=True,
            )


if __name__ == "__main__":
    main()
