"""The pitch task: salience targets, threshold tuning, decoding, melody scores, resume, end to end."""

import itertools
import json

import jams
import mir_eval
import numpy as np
import pytest
import torch

from mirpipe.models import salience as sal
from mirpipe.models.task import TASKS, pool_weighted
from mirpipe.models.trainer import Trainer, TrainerSettings
from mirpipe.storage import open_store
from mirpipe.storage.feature_kinds import FEATURE_KINDS
from mirpipe.storage.hcqt import WideCQT
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec, track_patches
from mirpipe.storage.torch_data import Feed, batch_bytes, epoch_loader, to_tensors

TASK = TASKS.get("pitch")
GRID = sal.Grid()
F0 = "targets/f0_hz"


# -- targets ----------------------------------------------------------------------------------


def test_a_known_f0_lands_on_its_bin_with_a_20_cent_gaussian():
    f0 = np.array([GRID.hz_of(120), GRID.hz_of(200.5), 0.0, -1.0])  # on bin 120, between 200 and 201, unvoiced, padding
    t = sal.salience_target(f0)
    assert t.shape == (4, 360) and t.dtype == np.float32
    assert t[0, 120] == pytest.approx(1.0) and np.argmax(t[0]) == 120
    assert t[0, 119] == pytest.approx(np.exp(-0.5), rel=1e-5) == t[0, 121]  # sigma = 1 bin = 20 cents
    assert t[0, 118] == pytest.approx(np.exp(-2.0), rel=1e-5)
    assert t[1, 200] == pytest.approx(t[1, 201]) == pytest.approx(np.exp(-0.125), rel=1e-5)
    assert not t[2].any() and not t[3].any()
    assert GRID.hz_of(0) == pytest.approx(32.7032, abs=1e-4) and GRID.cents_per_bin == 20.0


@pytest.mark.parametrize("n", [-6, -1, 2, 5])
def test_shifted_f0_scales_exactly_and_moves_the_target_by_5_bins_a_semitone(n):
    rng = np.random.default_rng(n + 10)
    f0 = GRID.hz_of(rng.uniform(60, 290, 50)).astype(np.float32)
    f0[::7] = 0.0
    f0[-3:] = -1.0  # padding stays padding
    moved = TASK.targets.transpose({F0: f0}, n)[F0]
    assert moved.dtype == f0.dtype
    np.testing.assert_allclose(moved[f0 > 0], f0[f0 > 0] * 2.0 ** (n / 12), rtol=1e-6)
    assert (moved[f0 <= 0] == f0[f0 <= 0]).all()
    np.testing.assert_allclose(
        TASK.network.on_device({F0: torch.from_numpy(moved)})["targets/salience"].numpy(),
        np.roll(sal.salience_target(f0), 5 * n, axis=-1),
        atol=2e-4,
    )


# -- threshold tuning and decoding ---------------------------------------------------------


def test_threshold_tuning_picks_the_best_overall_accuracy():
    rng = np.random.default_rng(0)
    n = 400
    voiced = rng.random(n) < 0.6
    correct = voiced & (rng.random(n) < 0.9)
    peak = np.where(voiced, rng.uniform(0.35, 0.9, n), rng.uniform(0.02, 0.45, n))
    candidates = np.round(np.arange(0.05, 0.95, 0.05), 3)
    threshold, accuracy = sal.tune_threshold(
        [(peak[:150], correct[:150], voiced[:150]), (peak[150:], correct[150:], voiced[150:])], candidates
    )
    brute = [np.mean(np.where(peak >= t, correct, ~voiced)) for t in candidates]
    assert accuracy == pytest.approx(max(brute)) and threshold == candidates[int(np.argmax(brute))]
    assert 0.3 <= threshold <= 0.5
    # the decision the tuning scores is the one decoding makes
    assert sal.overall_accuracy_curve(peak, correct, voiced, [threshold])[0] == pytest.approx(accuracy)


@pytest.mark.parametrize("viterbi_sigma_bins", [None, 2.0], ids=["argmax", "viterbi"])
def test_a_salience_map_of_a_contour_decodes_back_within_10_cents(viterbi_sigma_bins):
    rng = np.random.default_rng(1)
    T = 800
    times = np.arange(T) * 256 / 22050
    midi = 60 + 12 * np.sin(times / 3) + 0.3 * np.sin(2 * np.pi * 5.5 * times) + rng.uniform(-5, 5)
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    f0[100:180] = 0.0
    sal_map = sal.salience_target(f0) * 0.9
    hz, voiced = sal.decode_f0(sal_map, threshold=0.3, viterbi_sigma_bins=viterbi_sigma_bins)
    assert (voiced == (f0 > 0)).all()
    cents = 1200 * np.abs(np.log2(hz[f0 > 0] / f0[f0 > 0]))
    assert cents.max() < 10.0
    ann = sal.contour_annotation(times, hz, voiced, duration=T * 256 / 22050)
    ann.validate()
    t, signed = sal.contour_arrays(ann)
    np.testing.assert_allclose(t, times)
    assert (signed[f0 > 0] > 0).all() and (signed[f0 == 0] < 0).all()  # unvoiced frames keep their guess


def test_viterbi_keeps_the_melody_where_single_frames_peak_in_the_accompaniment():
    """A held melody note (A4) over a chord tone a fifth below that peaks higher in scattered
    frames: each frame's argmax jumps to the chord tone there, the Viterbi path does not; a real
    note change (to C5, held) is followed."""
    T = 300
    melody = np.where(np.arange(T) < 200, 440.0, 523.25)
    sal_map = 0.8 * sal.salience_target(melody)
    rng = np.random.default_rng(5)
    spurious = rng.choice(T, 40, replace=False)
    sal_map[spurious] = np.maximum(sal_map[spurious], 0.95 * sal.salience_target(np.full(spurious.size, 293.66)))
    hz_argmax, _ = sal.decode_f0(sal_map, threshold=0.3)
    hz_viterbi, voiced = sal.decode_f0(sal_map, threshold=0.3, viterbi_sigma_bins=2.0)
    cents = lambda hz: 1200 * np.abs(np.log2(hz / melody))
    assert (cents(hz_argmax)[spurious] > 600).all()  # the constructed case does fool the argmax
    assert cents(hz_viterbi).max() < 10.0 and voiced.all()


def test_pitch_decoding_uses_viterbi_by_default_and_can_be_turned_off():
    from mirpipe.models.pitch import PitchDecoding
    from mirpipe.models.task import TASKS

    task = TASKS.get("pitch")
    T = 120
    melody = np.full(T, 440.0)
    sal_map = 0.8 * sal.salience_target(melody)
    sal_map[60] = 0.95 * sal.salience_target(np.array([293.66]))[0]
    times = np.arange(T) * 256 / 22050
    est = {
        v: sal.contour_arrays(task.decoder.decode(sal_map, times, T * 256 / 22050, {"threshold": 0.3}, PitchDecoding(viterbi=v)))[
            1
        ]
        for v in (True, False)
    }
    assert abs(est[True][60] - 440.0) < 3.0 and abs(est[False][60] - 293.66) < 3.0


# -- scores --------------------------------------------------------------------------------


def _random_contour(rng, n):
    hz = 220.0 * 2 ** (rng.normal(0, 0.2, n).cumsum() / 12)
    voiced = rng.random(n) > 0.3
    return np.where(voiced, hz, 0.0)


def test_pooled_scores_equal_mir_eval_per_track_and_over_the_concatenated_frames():
    rng = np.random.default_rng(2)
    lengths = [300, 170, 520]
    ref_all = np.concatenate([_random_contour(rng, n) for n in lengths])
    noise = 2 ** (rng.normal(0, 0.6, len(ref_all)) / 12)  # some within 50 cents, some not
    est_all = np.where(rng.random(len(ref_all)) > 0.2, np.abs(ref_all) * noise, -np.abs(ref_all) * noise)
    est_all[ref_all == 0] = np.where(rng.random((ref_all == 0).sum()) > 0.5, 300.0, -300.0)
    per_track, start = [], 0
    for n in lengths:
        times = np.arange(n) * 0.01
        ref, est = ref_all[start : start + n], est_all[start : start + n]
        scores = sal.melody_scores(times, ref, times, est)
        expected = mir_eval.melody.evaluate(times, ref, times, est)
        for long, short in sal.SHORT.items():
            assert scores[short]["score"] == pytest.approx(expected[long], abs=1e-12)
        assert scores["OA"]["weight"] == pytest.approx(n * 0.01)
        per_track.append(scores)
        start += n
    pooled = pool_weighted(per_track, sal.METRICS)
    times = np.arange(len(ref_all)) * 0.01
    together = mir_eval.melody.evaluate(times, ref_all, times, est_all)
    for long, short in sal.SHORT.items():
        assert pooled[short] == pytest.approx(together[long], abs=1e-9), short


def test_task_scores_jams_contours_as_mir_eval_does():
    rng = np.random.default_rng(3)
    times = np.arange(400) * 256 / 22050
    ref_hz, est_hz = _random_contour(rng, 400), _random_contour(rng, 400)
    ref = sal.contour_annotation(times, ref_hz, ref_hz > 0, 5.0)
    est = sal.contour_annotation(times, est_hz, est_hz > 0, 5.0)
    scores = TASK.scorer.score(ref, est)
    expected = mir_eval.melody.evaluate(times, ref_hz, times, est_hz)
    assert {k: v["score"] for k, v in scores.items()} == pytest.approx({sal.SHORT[k]: v for k, v in expected.items()})


def test_score_table_prints_the_baseline_row(capsys):
    from mirpipe.pipeline.cli import _score_table
    from mirpipe.records import TaskScores

    scores = {
        "pitch": TaskScores.from_json(
            {
                "OA": 0.9,
                "RPA": 0.95,
                "columns": ["OA", "RPA"],
                "n_tracks": 2,
                "seconds": 60.0,
                "baseline": {"name": "pyin", "OA": 0.5, "RPA": None},
            }
        )
    }
    _score_table(scores, __import__("pathlib").Path("w"), json_mode=False)
    out = capsys.readouterr().out
    assert "model    0.900    0.950" in out and "pyin     0.500        -" in out


# -- training: resume equivalence on HCQT entries -------------------------------------------


@pytest.fixture(scope="module")
def hcqt_store(tmp_path_factory):
    """Six 3 s tracks of a harmonic tone gliding over a quiet chord, as the features stage stores them."""
    kind = FEATURE_KINDS.get("hcqt")
    params = kind.Params()
    store = open_store("zarr", tmp_path_factory.mktemp("pitch_store"))
    sr, rng = 22050, np.random.default_rng(4)
    frames = []
    for i in range(6):
        t = np.arange(3 * sr) / sr
        f = 440 * 2 ** ((rng.uniform(-12, 12) + 2 * np.sin(t)) / 12)
        phase = 2 * np.pi * np.cumsum(f) / sr
        y = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * (np.sin(2 * np.pi * 1.5 * t) > -0.5)
        y = (0.3 * y + 0.05 * np.sin(2 * np.pi * 130 * t)).astype(np.float32)
        stored, geometry = kind.compute(y, sr, params, margin_semitones=2)
        times = np.arange(stored.shape[0]) * 256 / sr
        voiced = np.interp(times, t, (np.sin(2 * np.pi * 1.5 * t) > -0.5).astype(float)) > 0.5
        f0 = np.where(voiced, np.interp(times, t, f), 0).astype(np.float32)
        store.write_entry(f"p{i}", {"hcqt": stored[None], F0: f0[None]}, {"variants": [0], "features": {"hcqt": geometry}})
        frames.append(stored.shape[0])
    return store, frames


def _pitch_spec(store, geometry=None) -> StreamSpec:
    """The pitch stream of the small store: 16-frame patches from 64-frame slabs, shifts -2, 0, 2."""
    return StreamSpec(
        "zarr",
        str(store.root),
        "hcqt",
        TASK.targets.arrays,
        patch_frames=16,
        slab_frames=64,
        shifts=(-2, 0, 2),
        task=TASK,
        geometry=geometry,
    )


def _pitch_trainer(store, frames, out_dir, workers=0, channels_last=False):
    torch.manual_seed(0)
    model = TASK.network.build(360, TASK.network.Params(channels=[4], tall_channels=2, tall_bins=9))
    geometry = store.read_attrs("p0")["features"]["hcqt"]  # packed batches, as the train stage streams them
    spec = _pitch_spec(store, geometry)
    keys = [EntryKey(f"p{i}", n) for i, n in enumerate(frames)]
    stream = PatchStream(spec, keys[:4], MuxSettings(batch_size=2, n_active=2, rate=4, n_shards=2), seed=3)
    settings = TrainerSettings(
        steps_per_epoch=3,
        max_epochs=5,
        patience=5,
        lr=1e-2,
        checkpoint_every=2,
        device="cpu",
        seed=5,
        threads=1,
        deterministic=True,
        channels_last=channels_last,
    )
    return Trainer(
        model,
        TASK,
        lambda epoch, skip: epoch_loader(stream, epoch, skip=skip, n_workers=workers),
        lambda: (to_tensors(b) for b in track_patches(spec, keys[4:], 4)),
        settings,
        out_dir,
        run_key="pitch",
        log=lambda m: None,
        tensorboard=False,
        feed=Feed(TASK, geometry),
    )


def _pitch_stream(store, frames, geometry=None, n_keys=2, batch_size=6, n_shards=1):
    spec = _pitch_spec(store, geometry)
    keys = [EntryKey(f"p{i}", frames[i]) for i in range(n_keys)]
    return PatchStream(spec, keys, MuxSettings(batch_size=batch_size, n_active=2, rate=4, n_shards=n_shards), 0)


def test_batches_cross_as_codes_and_f0_and_the_device_makes_the_numpy_view_and_salience(hcqt_store):
    """The same seed gives the same batches: the loader ships the HCQT's uint8 codes, the shift and f0;
    ``Feed`` on the trainer's device makes the float32 view and the salience target of the numpy path,
    in at least 4x fewer bytes."""
    store, frames = hcqt_store
    geometry = store.read_attrs("p0")["features"]["hcqt"]
    n_wide = WideCQT.from_json(geometry["wide"]).n_wide_bins
    old_stream, new_stream = _pitch_stream(store, frames), _pitch_stream(store, frames, geometry)
    feed = Feed(TASK, geometry)
    shifts = set()
    for old, new in itertools.islice(zip(old_stream.batches(0), new_stream.batches(0)), 4):
        # before: the float32 view and the salience built from f0 where the batch is cut
        old = {**old, "targets/salience": sal.salience_target(old[F0])}
        assert old["hcqt"].shape == (6, 6, 16, 360) and old["hcqt"].dtype == np.float32
        assert set(new) == {"hcqt", "hcqt:shift", F0}
        assert new["hcqt"].shape == (6, 16, n_wide) and new["hcqt"].dtype == np.uint8 and new["hcqt:shift"].dtype == np.int8
        np.testing.assert_array_equal(new[F0], old[F0])
        assert batch_bytes(old) >= 4 * batch_bytes(new), (batch_bytes(old), batch_bytes(new))
        made = feed(to_tensors(new))
        assert set(made) == {"hcqt", F0, "targets/salience"}
        assert made["hcqt"].dtype == torch.float32 and made["targets/salience"].dtype == torch.float32
        np.testing.assert_allclose(made["hcqt"].numpy(), old["hcqt"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(made["targets/salience"].numpy(), old["targets/salience"], rtol=1e-6, atol=1e-7)
        shifts |= set(new["hcqt:shift"].tolist())
    assert len(shifts) > 1  # several shifts in one batch: each patch viewed at its own


def test_an_entry_of_other_feature_settings_is_refused_by_a_packed_stream(hcqt_store):
    store, frames = hcqt_store
    geometry = {**store.read_attrs("p0")["features"]["hcqt"], "db_range": [-90.0, 40.0]}
    with pytest.raises(ValueError, match="p0: its hcqt geometry"):
        next(_pitch_stream(store, frames, geometry, n_keys=1).batches(0))


def test_packed_pitch_batches_are_the_same_through_0_and_2_loader_workers(hcqt_store):
    store, frames = hcqt_store
    stream = _pitch_stream(store, frames, store.read_attrs("p0")["features"]["hcqt"], n_keys=4, batch_size=3, n_shards=2)
    a = list(itertools.islice(epoch_loader(stream, 1, n_workers=0), 6))
    b = list(itertools.islice(epoch_loader(stream, 1, n_workers=2), 6))
    assert a[0]["hcqt"].dtype == torch.uint8
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)


def test_the_loss_is_the_same_for_float16_logits_as_under_cuda_autocast():
    """A GPU batch (32 patches x 64 frames x 360 bins) in float16: the loss must not collapse to 0."""
    from mirpipe.models.pitch_net import masked_bce

    rng = np.random.default_rng(0)
    f0 = torch.from_numpy(np.where(rng.random((32, 64)) < 0.8, rng.uniform(60, 900, (32, 64)), 0.0).astype(np.float32))
    target = torch.from_numpy(sal.salience_target(f0.numpy()))
    logits = torch.from_numpy(rng.normal(-4, 2, (32, 64, 360)).astype(np.float32)).half()
    full = masked_bce(logits.float(), target, f0)
    assert float(full) > 0.01
    torch.testing.assert_close(masked_bce(logits, target, f0), full)


def test_pitch_k_steps_then_resume_to_2k_equals_2k_in_one_go(hcqt_store, tmp_path):
    store, frames = hcqt_store
    k = 4  # mid-epoch
    straight = _pitch_trainer(store, frames, tmp_path / "straight")
    straight.fit(stop_at_step=2 * k)
    first = _pitch_trainer(store, frames, tmp_path / "resumed")
    first.fit(stop_at_step=k)
    second = _pitch_trainer(store, frames, tmp_path / "resumed", workers=2)
    second.fit(stop_at_step=2 * k)
    a, b = straight.model.state_dict(), second.model.state_dict()
    for name in a:  # bitwise: the batches' HCQT view and salience are made by the trainer's feed, deterministically
        assert torch.equal(a[name], b[name]), name
    assert [r["raw_pitch_accuracy"] for r in second.state.history] == [r["raw_pitch_accuracy"] for r in straight.state.history]


# -- end to end ------------------------------------------------------------------------------


def test_tiny_pitch_model_trains_and_scores_against_pyin(tmp_path, sync_cluster):
    from conftest import small_config

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.runner import Runner

    data = small_config(tracks=6, shifts=[0, 2]).model_dump(mode="json")
    data["train"] = {
        **data["train"],
        "tasks": ["pitch"],
        "threads": 1,
        "patch_frames": 32,
        "batch_size": 4,
        "n_active": 4,
        "rate": 4,
        "steps_per_epoch": 3,
        "max_epochs": 2,
        "checkpoint_every": 3,
        "models": {"pitch": {"channels": [4], "tall_channels": 2, "tall_bins": 15}},
        "overrides": {"pitch": {"lr": 0.01}},
    }
    data["evaluate"] = {**data["evaluate"], "tasks": ["pitch"], "figures": 1}
    cfg = type(small_config()).model_validate(data)
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(tmp_path, cfg, progress=False).run(ex)}
    assert reports["train"].done == 1 and reports["evaluate"].failed == 0 and reports["evaluate"].done >= 1
    ckpt = torch.load(tmp_path / "train" / "pitch" / "best.pt", weights_only=True)
    assert 0 < ckpt["meta"]["state"]["threshold"] < 1  # tuned on the validation split, kept in the checkpoint
    out = tmp_path / "reports" / "pitch"
    scores = json.loads((out / "scores.json").read_text())
    assert scores["columns"] == ["OA", "RPA", "RCA", "VR", "VFA"] and scores["baseline"]["name"] == "pyin"
    for m in sal.METRICS:
        assert 0.0 <= scores[m] <= 1.0 and 0.0 <= scores["baseline"][m] <= 1.0
    track = sorted(scores["tracks"])[0]
    est = jams.load(str(out / "estimates" / f"{track}.jams"), validate=True, strict=True)
    assert est.annotations[0].namespace == "pitch_contour" and len(est.annotations[0].data) > 100
    assert (out / "figures" / f"{track}.png").read_bytes()[:4] == b"\x89PNG"
    assert "pyin:OA" in (out / "scores.csv").read_text().splitlines()[0]


def test_channels_last_trains_the_same_model(hcqt_store, tmp_path):
    """``train.channels_last`` changes the memory order only: the HCQT input and the conv weights are
    channels-last, and the same batch gives the same outputs, loss and gradients (within float
    rounding); the checkpoint loads into a model in the default order. (Not the weights after Adam
    steps: a gradient of ~0 has a sign that is rounding noise, and Adam's first step is +-lr.)"""
    store, frames = hcqt_store
    eager = _pitch_trainer(store, frames, tmp_path / "eager")
    last = _pitch_trainer(store, frames, tmp_path / "last", channels_last=True)
    weights = [p for p in last.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p[0, 0].numel() > 1]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in weights)
    batch = next(iter(eager.train_batches(0, 0)))
    outputs, losses = [], []
    for trainer in (eager, last):
        trainer.model.eval()
        with torch.no_grad():
            outputs.append(trainer._forward(trainer._to_device(batch), training=True))
        losses.append(float(trainer.train_step(batch)["loss"]))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    grads = [{n: p.grad for n, p in t.model.named_parameters()} for t in (eager, last)]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-3, atol=1e-6, msg=name)
    last.save_last()
    fresh = TASK.network.build(360, TASK.network.Params(channels=[4], tall_channels=2, tall_bins=9))
    fresh.load_state_dict(torch.load(tmp_path / "last" / "last.pt", weights_only=True)["model"])
