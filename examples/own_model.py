"""Your own chord model on a mirpipe store, trained from the pipeline's patch streams and scored with
mir_eval on the test split (docs/api.md).

    python examples/own_model.py [WORKDIR [STEPS]]     # default: work/demo 300

WORKDIR is any workdir ``mirpipe run`` computed features in (``make demo`` makes work/demo).
"""

import sys

import mir_eval
import numpy as np
import torch
from torch import nn

import mirpipe
from mirpipe.models.chord import N_TAGS, tags_to_annotation

workdir = sys.argv[1] if len(sys.argv) > 1 else "work/demo"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
torch.manual_seed(0)
wb = mirpipe.open(workdir)
n_bins = wb.input_bins("chord")


class Net(nn.Module):
    """CQT patches (batch, frames, bins) -> chord-class logits (batch, frames, 170)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 32, (1, n_bins)), nn.ReLU())
        self.head = nn.Conv1d(32, N_TAGS, 9, padding=4)  # a little temporal context per frame

    def forward(self, x):
        return self.head(self.conv(x[:, None]).squeeze(-1)).transpose(1, 2)


model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for batch in wb.loader("chord", batch_size=16, steps=steps):  # float32 CQT, int64 targets; -1: padding
    logits = model(batch["cqt"])
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets/chord_tag"].flatten(), ignore_index=-1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

model.eval()
scores = []
for track in wb.tracks("test", "chord"):  # whole tracks, unshifted, with their reference annotations
    with torch.no_grad():
        tags = model(torch.from_numpy(track.features)[None])[0].argmax(-1).numpy()
    estimate = tags_to_annotation(tags, track.frame_times, track.duration)  # class -> Harte label per segment
    (ref_int, ref_lab), (est_int, est_lab) = track.reference.to_interval_values(), estimate.to_interval_values()
    score = mir_eval.chord.evaluate(np.array(ref_int), ref_lab, np.array(est_int), est_lab)["majmin"]
    scores.append(score)
    print(f"{track.track}: majmin {score:.3f}")
print(f"mean majmin {np.mean(scores):.3f} over {len(scores)} test tracks (loss {loss.item():.3f} after {steps} steps)")
