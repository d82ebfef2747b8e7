import numpy as np
import soundfile
import torch

from trainables.asc.augment import DeviceImpulseResponses, freq_mixstyle, frequency_mask, mixup, time_roll
from trainables.asc.frontend import MASKED_LOG_MEL, LogMel


def test_time_roll_is_a_circular_shift_per_clip():
    torch.manual_seed(0)
    wave = torch.arange(20.0).repeat(3, 1)
    rolled = time_roll(wave, 5)
    for row in rolled:
        shift = int((row == 0).nonzero())
        assert torch.equal(row, torch.roll(wave[0], shift))
        assert shift <= 5 or shift >= 15


def test_frequency_mask_zeroes_one_band_per_example():
    torch.manual_seed(1)
    spec = torch.ones(8, 1, 64, 10)
    masked = frequency_mask(spec, 20)
    for example in masked:
        zero_bins = (example[0, :, 0] == 0).nonzero().flatten()
        assert len(zero_bins) < 20
        if len(zero_bins):
            assert zero_bins.max() - zero_bins.min() + 1 == len(zero_bins), "one contiguous band"


def test_freq_mixstyle_keeps_shape_and_mixes_statistics():
    torch.manual_seed(2)
    spec = torch.randn(6, 1, 16, 20) + torch.linspace(-3, 3, 6).view(6, 1, 1, 1)
    mixed = freq_mixstyle(spec, p=1.0, alpha=0.3)
    assert mixed.shape == spec.shape and not torch.allclose(mixed, spec)
    assert torch.equal(freq_mixstyle(spec, p=0.0, alpha=0.3), spec)


def test_dir_convolves_only_device_a_clips(tmp_path):
    delta = np.zeros(64, dtype=np.float32)
    delta[0] = 1.0
    soundfile.write(tmp_path / "delta.wav", delta, 32000)
    echo = np.zeros(400, dtype=np.float32)
    echo[0], echo[300] = 1.0, 0.8
    soundfile.write(tmp_path / "echo.wav", echo, 32000)
    torch.manual_seed(3)
    wave = torch.randn(6, 32000)
    is_a = torch.tensor([True, True, True, True, False, False])
    dirs = DeviceImpulseResponses(tmp_path, 32000, p=1.0)
    out = dirs(wave, is_a)
    assert torch.equal(out[4:], wave[4:]), "other devices untouched"
    for i in range(4):
        energy = wave[i].square().sum()
        same = torch.allclose(out[i], wave[i], atol=1e-4)  # the delta
        echoed = torch.allclose(out[i, 300:], wave[i, 300:] + 0.8 * wave[i, :-300], atol=1e-3)  # as recorded, not rescaled
        assert same or echoed, f"clip {i} is neither the delta's nor the echo's convolution ({energy})"
    assert torch.equal(DeviceImpulseResponses(tmp_path, 32000, p=0.0)(wave, is_a), wave)


def test_a_masked_bin_reads_as_silence_after_the_log_as_in_the_baseline():
    # The baseline masks mel power before log(x + 1e-5): a masked bin becomes log(1e-5), not 0.
    torch.manual_seed(4)
    spec = LogMel()(torch.randn(6, 32000) * 0.1)
    masked = frequency_mask(spec, 48, fill=MASKED_LOG_MEL)
    changed = masked != spec
    assert changed.any()
    assert torch.allclose(masked[changed], torch.tensor(MASKED_LOG_MEL))
    assert abs(MASKED_LOG_MEL - (-11.5129)) < 1e-3 and MASKED_LOG_MEL < spec.min()


def test_mixup_draws_one_weight_and_a_partner_per_example():
    torch.manual_seed(5)
    mix = mixup(8, 1.0, torch.device("cpu"))
    assert 0.0 <= mix.weight <= 1.0 and sorted(mix.perm.tolist()) == list(range(8))
    assert mixup(8, 0.0, torch.device("cpu")) is None
