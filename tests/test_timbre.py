"""Feature-domain timbre augmentation (``augment.eq_tilt_db``, ``augment.noise_snr_db``,
``augment.gain_db``): each training patch draws its parameters in the stream, the trainer's ``Feed``
applies them to the dB model input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import toy_chord_store

from mirpipe.models.task import TASKS
from mirpipe.shifts import AugmentParams, Timbre
from mirpipe.storage.feature_kinds import FEATURE_KINDS
from mirpipe.storage.stream import EntryKey, MuxSettings, PatchStream, StreamSpec
from mirpipe.storage.torch_data import Feed, deform_timbre, to_tensors

TASK = TASKS.get("chord")
N_BINS = 72


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_chord_store(tmp_path_factory.mktemp("timbre"), [200, 240, 260], [0, 14, 28], N_BINS)


def _stream(store, timbre=None):
    geometry = store.read_attrs("t0")["features"]["cqt"]
    spec = StreamSpec("zarr", str(store.root), "cqt", TASK.targets.arrays, 32, 64, task=TASK, geometry=geometry, timbre=timbre)
    keys = [EntryKey(f"t{i}", n) for i, n in enumerate([200, 240, 260])]
    return PatchStream(spec, keys, MuxSettings(batch_size=8, n_active=2, rate=4, n_shards=1), seed=1), geometry


def test_off_by_default_and_validated():
    assert AugmentParams().timbre() is None
    assert AugmentParams(eq_tilt_db=3).timbre() == Timbre(3.0, None, 0.5)
    assert AugmentParams(eq_tilt_db=3, enabled=False).timbre() is None
    assert AugmentParams(noise_snr_db=(10, 30)).timbre().snr_db == (10, 30)
    with pytest.raises(ValueError, match="noise_snr_db"):
        AugmentParams(noise_snr_db=(30, 10))
    assert AugmentParams(gain_db=12).timbre() == Timbre(0.0, None, 0.5, 12.0)
    with pytest.raises(ValueError, match="gain_db"):
        AugmentParams(gain_db=-3)
    # a run without a gain keeps the training identity it had before gain_db existed
    assert "gain_db" not in Timbre(3.0).to_json() and Timbre(3.0, gain_db=6).to_json()["gain_db"] == 6


def test_patches_draw_their_parameters_apart_from_the_patches_themselves(store):
    """The same patches with and without timbre (its draws use a generator of their own), the same
    parameters for the same seed, within the configured ranges, noise on about its share of patches."""
    plain, _ = _stream(store)
    timbre = Timbre(4.0, (10.0, 30.0), 0.5)
    a, _ = _stream(store, timbre)
    b, _ = _stream(store, timbre)
    snrs = []
    for x, y, z in itertools.islice(zip(plain.batches(0), a.batches(0), b.batches(0)), 12):
        assert set(y) == set(x) | {"aug:tilt", "aug:snr", "aug:colour", "aug:gain"}
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
        for name in y:
            np.testing.assert_array_equal(y[name], z[name])
        assert np.all(np.abs(y["aug:tilt"]) <= 4.0) and y["aug:tilt"].shape == (8,)
        snrs.extend(y["aug:snr"].tolist())
        noisy = ~np.isnan(y["aug:snr"])
        assert set(y["aug:colour"][noisy].tolist()) <= {3.0, 0.0, -3.0} and np.all(y["aug:colour"][~noisy] == 0)
        assert np.all(y["aug:gain"] == 0)  # off
    snr = np.array(snrs)
    assert 0.3 < np.mean(~np.isnan(snr)) < 0.7
    assert np.all((snr[~np.isnan(snr)] >= 10) & (snr[~np.isnan(snr)] <= 30))


def test_a_gain_draws_apart_and_leaves_the_other_draws_as_they_were(store):
    """Turning a gain on changes no tilt or noise draw (a run's other augmentations stay comparable);
    the gains lie in the configured range and take both signs."""
    a, _ = _stream(store, Timbre(4.0, (10.0, 30.0), 0.5))
    b, _ = _stream(store, Timbre(4.0, (10.0, 30.0), 0.5, gain_db=12.0))
    gains = []
    for x, y in itertools.islice(zip(a.batches(0), b.batches(0)), 12):
        for name in ("aug:tilt", "aug:snr", "aug:colour", "cqt"):
            np.testing.assert_array_equal(x[name], y[name])
        gains.extend(y["aug:gain"].tolist())
    g = np.array(gains)
    assert np.all(np.abs(g) <= 12.0) and g.min() < -3 and g.max() > 3


def test_a_gain_moves_the_music_and_keeps_the_silence():
    """Louder: every value above the floor rises by the gain, the floor (silence) stays. Quieter: values
    fall by the gain and stop at the floor, as a quieter recording's would in the store. The noise
    of ``noise_snr_db`` follows the patch's new peak."""
    octaves = torch.arange(N_BINS, dtype=torch.float32) / 36
    floor = -100.0
    x = torch.full((3, 4, N_BINS), -60.0)
    x[:, 0, :] = floor  # a silent frame
    x[:, 1:, 30] = -10.0
    no_noise, zeros = torch.full((3,), math.nan), torch.zeros(3)
    gain = torch.tensor([0.0, 12.0, -50.0])
    out = deform_timbre(x, octaves, zeros, no_noise, zeros, gain, floor)
    torch.testing.assert_close(out[0], x[0])
    assert torch.all(out[:, 0, :] == floor)  # silence stays silence, louder or quieter
    torch.testing.assert_close(out[1, 1:], x[1, 1:] + 12.0)
    assert float(out[2, 1, 30]) == pytest.approx(-60.0) and torch.all(out[2, 1:, :30] == floor)  # cut at the floor
    # without a floor each patch's minimum stands in for it
    torch.testing.assert_close(deform_timbre(x, octaves, zeros, no_noise, zeros, gain), out)
    # noise 30 dB under the peak: under the louder patch's peak (+2 dB), 12 dB higher than without the gain
    snr = torch.full((3,), 30.0)
    loud = deform_timbre(x, octaves, zeros, snr, zeros, gain, floor)
    plain = deform_timbre(x, octaves, zeros, snr, zeros, None, floor)
    assert float(loud[1, 0, 0] - plain[1, 0, 0]) == pytest.approx(12.0, abs=0.01)


def test_the_tilt_is_a_gain_per_octave_and_noise_is_summed_in_power():
    octaves = torch.arange(N_BINS, dtype=torch.float32) / 36  # two octaves
    x = torch.full((3, 5, N_BINS), -80.0)
    x[:, :, 30] = -10.0  # one loud bin per frame, the patch's peak
    tilt = torch.tensor([0.0, 6.0, -6.0])
    out = deform_timbre(x, octaves, tilt, torch.full((3,), math.nan), torch.zeros(3))
    centred = octaves - 71 / 72  # about the middle of the range
    torch.testing.assert_close(out, x + tilt[:, None, None] * centred)
    # noise 30 dB below the -10 dB peak, pink (flat): quiet bins rise to about -40 dB, the peak stays
    snr, colour = torch.tensor([30.0, math.nan, 30.0]), torch.tensor([0.0, 0.0, 3.0])
    out = deform_timbre(x, octaves, torch.zeros(3), snr, colour)
    assert torch.all(out >= x - 1e-4)
    expected = 10 * math.log10(10 ** (-80 / 10) + 10 ** (-40 / 10))
    torch.testing.assert_close(out[0, :, 0], torch.full((5,), float(expected)))
    assert abs(float(out[0, 0, 30]) - (-10.0)) < 0.01
    torch.testing.assert_close(out[1], x[1])  # NaN: no noise
    white = out[2, 0, :] - out[0, 0, :]  # +3 dB per octave about the middle
    assert float(white[N_BINS - 1]) == pytest.approx(3.0 * 71 / 72, abs=0.05) and float(white[0]) < -2.5


def test_the_feed_applies_the_drawn_parameters_to_the_model_input(store):
    stream, geometry = _stream(store, Timbre(4.0, (10.0, 30.0), 0.5))
    batch = to_tensors(next(stream.batches(0)))
    fed = Feed(TASK, geometry)(batch)
    assert not any(name.startswith("aug:") for name in fed)
    octaves = torch.from_numpy(FEATURE_KINDS.get("cqt").octaves(geometry))
    plain = batch["cqt"].float()
    torch.testing.assert_close(
        fed["cqt"],
        deform_timbre(plain, octaves, batch["aug:tilt"], batch["aug:snr"], batch["aug:colour"], batch["aug:gain"]),
    )
    assert not torch.equal(fed["cqt"], plain)


def test_hcqt_bins_lie_where_their_harmonic_puts_them():
    kind = FEATURE_KINDS.get("hcqt")
    geometry = kind.geometry(22050, kind.Params(), margin_semitones=2)
    octaves = kind.octaves(geometry)
    assert octaves.shape == (6, 1, 360)  # harmonics 0.5, 1, 2, 3, 4, 5 over 6 octaves at 60 bins/octave
    assert octaves[1, 0, 0] - octaves[0, 0, 0] == pytest.approx(1.0)  # h=1 is an octave above h=0.5
    assert octaves[3, 0, 0] - octaves[2, 0, 0] == pytest.approx(math.log2(1.5))
    assert octaves[0, 0, 60] == pytest.approx(1.0)


def test_timbre_settings_are_an_experiment_on_the_same_features():
    """Timbre is made where patches are fed, so no stage before training computes anything else:
    an experiment may set it (``experiment_config`` refuses a setting that changes those stages)."""
    from conftest import small_config

    from mirpipe.pipeline.experiments import experiment_config

    base = small_config(tracks=2, shifts=[-2, 0, 3])
    exp = experiment_config(base, {"augment.eq_tilt_db": 3, "augment.noise_snr_db": [10, 40]}, "timbre")
    assert exp.augment.timbre() == Timbre(3.0, (10.0, 40.0), 0.5) and base.augment.timbre() is None
    assert experiment_config(base, {"augment.gain_db": 12}, "gain").augment.timbre() == Timbre(gain_db=12.0)


def test_an_activations_generators_never_share_a_seed():
    """The deformation choice, the timbre draws and the gains each have a generator of their own
    (two sharing a seed would draw the same numbers: the first gain tied to the deformation choice)."""
    from mirpipe.storage.stream import SUBSTREAMS

    assert set(SUBSTREAMS) == {"timbre", "deformation", "gain"}
    assert len(set(SUBSTREAMS.values())) == len(SUBSTREAMS)


def test_a_zero_gain_changes_nothing_the_tilt_and_noise_made():
    """Patches carry ``aug:gain`` whenever timbre is on; a gain of 0 (``gain_db`` off) must leave the
    tilted, noisy spectra exactly as they were without it, even where the tilt went under the floor."""
    octaves = torch.arange(N_BINS, dtype=torch.float32) / 36
    x = torch.full((2, 3, N_BINS), -60.0)
    x[:, 0, :] = -100.0
    x[:, 1, :] = -99.0  # just above the floor: the tilt takes one end of it under
    x[:, 1:, 30] = -10.0
    tilt, snr, colour = torch.tensor([6.0, -6.0]), torch.tensor([math.nan, 30.0]), torch.zeros(2)
    plain = deform_timbre(x, octaves, tilt, snr, colour)
    assert float(plain[0, 1].min()) < -100.0  # the tilt took music under the floor
    torch.testing.assert_close(deform_timbre(x, octaves, tilt, snr, colour, torch.zeros(2), -100.0), plain, rtol=0, atol=0)
