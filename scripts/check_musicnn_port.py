"""Check mirpipe's torch port of musicnn against the original TensorFlow graph (optional; needs TensorFlow).

Not part of the install or of the tests: run it in a separate environment holding TensorFlow, tf-keras
and the unpacked musicnn wheel (its models.py builds the graph), e.g.

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf-keras
    pip download --no-deps musicnn==0.1.0 -d /tmp/w && unzip -q /tmp/w/musicnn-*.whl -d /tmp/w/x
    .venv/bin/python scripts/check_musicnn_port.py --mel /tmp/mel.npy AUDIO        # mel + torch outputs
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python scripts/check_musicnn_port.py --tf /tmp/w/x --mel /tmp/mel.npy

The second call prints the largest difference of the penultimate layer and the tag logits (measured
2026-12-07 on a 3 s piano excerpt: 1.2e-6 and 2.9e-6).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def torch_side(audio: str, mel_path: str) -> None:
    import librosa
    import torch

    from mirpipe.storage import musicnn

    y, _ = librosa.load(audio, sr=musicnn.SR, duration=3.0)
    mel = musicnn.log_mel(y)[:187][None]
    np.save(mel_path, mel)
    net = musicnn.load_network()
    with torch.no_grad():
        f = net.midend(torch.from_numpy(mel))[0]
        pen = net.penultimate(net.pooled(f.amax(0)[None], f.mean(0)[None]))
        np.savez(mel_path + ".torch.npz", penultimate=pen.numpy(), logits=net.logits(pen).numpy())


def tf_side(wheel_dir: str, mel_path: str) -> None:
    sys.path.insert(0, wheel_dir)
    import tensorflow as tf
    from musicnn import models  # the wheel's own graph

    tf.compat.v1.disable_eager_execution()
    mel = np.load(mel_path)
    x = tf.compat.v1.placeholder(tf.float32, [None, mel.shape[1], 96])
    out = models.define_model(x, False, "MTT_musicnn", 50)
    sess = tf.compat.v1.Session()
    tf.compat.v1.train.Saver().restore(sess, f"{wheel_dir}/musicnn/MTT_musicnn/")
    logits, pen = sess.run([out[0], out[-1]], {x: mel})
    ours = np.load(mel_path + ".torch.npz")
    print(
        f"penultimate: max |diff| {np.abs(pen - ours['penultimate']).max():.2e}; logits: {np.abs(logits - ours['logits']).max():.2e}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", nargs="?")
    ap.add_argument("--mel", required=True)
    ap.add_argument("--tf", help="the unpacked musicnn wheel: run the TensorFlow side")
    a = ap.parse_args()
    tf_side(a.tf, a.mel) if a.tf else torch_side(a.audio, a.mel)
