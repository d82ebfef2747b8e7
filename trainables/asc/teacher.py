"""The PaSST teacher, built with hear21passt's own model code (plain PyTorch); its loop is in teacher_training.py.

Two configurations:
- `passt_s_swa_p16_128_ap476`: the standard PaSST-S (768 wide, 12 blocks) the seeds fine-tune,
  with AudioSet weights read from a local file (`weights`); nothing is downloaded.
- `passt_tiny`: the same PaSST class, fewer blocks and a smaller width, trained from scratch; it
  makes a useful teacher for the embedded synthetic dataset on 2 CPU cores in minutes.

The front end is hear21passt's AugmentMelSTFT (128 mel bins, 25 ms window, 10 ms hop at 32 kHz),
so the teacher sees the audio differently from the student, as in the seed systems.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchaudio
from torch import nn

from trainables.asc.augment import IMPULSE_RESPONSES, frequency_mask
from trainables.asc.frontend import MASKED_LOG_MEL, FrontendConfig, LogMel
from trainables.asc.student import Student, StudentArch
from trainables.precision import PRECISIONS, autocast
from trainables.settings import (
    MAX_LR, SEED_HIGH, SettingError, Settings, check_step_budget, flag, path_setting, seed_setting, setting,
)

STANDARD_ARCH = "passt_s_swa_p16_128_ap476"
SCHEDULES = ("cosine", "exp_warmup_linear_down")
AUDIOSET_FRAMES = 998  # the standard PaSST's input length: 10 s at a 10-ms hop
TINY_ARCH = "passt_tiny"
CNN_ARCH = "cnn"
ARCHS = (TINY_ARCH, CNN_ARCH, STANDARD_ARCH)
FROM_SCRATCH = (TINY_ARCH, CNN_ARCH)  # the archs without AudioSet weights: random weights, or the synthetic pretraining
PRETRAINING = ("none", "synthetic")  # synthetic: pretrained once on the synthetic AudioSet stand-in


def _hear21passt():
    """hear21passt's model and front-end modules, imported on first use: with timm and torchvision they cost
    2 s and about 100 MB, which validating a space file or running a student trial never needs."""
    from hear21passt.models import passt, preprocess

    passt.first_RUN = False  # it prints tensor shapes on its first forward pass otherwise
    return passt, preprocess


@dataclass(frozen=True)
class TeacherConfig(Settings):
    """One teacher's settings. Learning rates are per step of Adam; epochs over the subset.

    `cache_key`: whether a setting changes the weights a teacher stage produces, and so the name of its cached
    file (search/teachers.py); every setting decides. Those that do not are in the key another way, or never
    change a weight (said beside each)."""

    arch: str = setting(TINY_ARCH, choices=ARCHS, cache_key=True)  # passt_tiny, cnn or passt_s_swa_p16_128_ap476
    # local AudioSet checkpoint for the standard arch (None: random init)
    weights: str | None = path_setting("file", cache_key=True)
    # passt_tiny only: its width (a multiple of num_heads), blocks, attention heads and stochastic depth
    embed_dim: int = setting(96, low=1, cache_key=True)
    depth: int = setting(2, low=1, cache_key=True)
    num_heads: int = setting(4, low=1, cache_key=True)
    drop_path_rate: float = setting(0.0, low=0.0, high=1.0, high_open=True, cache_key=True)  # at 1 no block runs
    width: int = setting(64, low=8, cache_key=True)  # cnn only: its base channels (the student has 32; 64 makes 228k
    # parameters)
    epochs: int = setting(8, low=1, cache_key=False)  # in the member's key beside these (not in a stage's: each its own)
    train_steps: int = setting(0, low=0, cache_key=False)  # fine-tuning's optimiser steps, the same at every subset, split
    # evenly over `epochs` (0: `epochs` passes over the subset); the stages before it (pretrain, sit) always count
    # passes. In the member's key beside these
    batch_size: int = setting(32, low=1, cache_key=True)
    lr: float = setting(1e-3, low=0.0, low_open=True, high=MAX_LR, cache_key=True)  # the seeds fine-tune the pretrained
    # standard PaSST at 1e-5
    head_lr: float | None = setting(None, low=0.0, low_open=True, high=MAX_LR, cache_key=True)  # lr of the
    # classification heads (their LayerNorm included); None: lr. NTU: 1e-3
    weight_decay: float = setting(1e-3, low=0.0, cache_key=True)
    schedule: str = setting("cosine", choices=SCHEDULES, cache_key=True)  # cosine: warm-up then cosine decay, per step;
    # exp_warmup_linear_down: CP-JKU's and
    # NTU's per-epoch schedule (exponential warm-up, then linear decay to lr_floor · lr), with the settings below
    warmup_fraction: float = setting(0.1, low=0.0, high=1.0, high_open=True, cache_key=True)  # cosine: share of all
    # steps spent warming up
    warmup_epochs: int = setting(3, low=0, cache_key=True)  # exp_warmup_linear_down: epochs of exponential warm-up
    rampdown_start: int = setting(3, low=0, cache_key=True)  # exp_warmup_linear_down: the epoch the linear decay
    # starts …
    rampdown_epochs: int = setting(10, low=1, cache_key=True)  # … how many epochs it lasts …
    lr_floor: float = setting(0.01, low=0.0, high=1.0, low_open=True, cache_key=True)  # … and the share of lr it ends at
    # Patches dropped in training (hear21passt's structured patchout): a count, so not negative
    s_patchout_t: int = setting(0, low=0, cache_key=True)
    s_patchout_f: int = setting(0, low=0, cache_key=True)  # the seeds drop 6 of the standard model's 12 frequency
    # patches
    freqm: int = setting(0, low=0, high=256, cache_key=True)  # frequency-mask width of the mel front end, bins of 128
    # (the seeds: 48); cnn: of 256, the most there are
    timem: int = setting(0, low=0, cache_key=True)  # time-mask width, frames of 101 per second (the seeds: 20); PaSST
    # only
    mixstyle_p: float = setting(0.4, low=0.0, high=1.0, cache_key=True)
    mixstyle_alpha: float = setting(0.4, low=0.0, low_open=True, cache_key=True)  # of Beta(α, α), which needs α > 0
    roll_sec: float = setting(0.1, low=0.0, cache_key=True)  # maximum time roll, seconds
    # folder of device impulse responses (wav) for DIR augmentation; None: off
    dir_path: str | None = path_setting("dir", holds=IMPULSE_RESPONSES, cache_key=True)
    dir_prob: float = setting(0.6, low=0.0, high=1.0, cache_key=True)  # probability of convolving a device-a clip with
    # one of them
    sample_rate: int = setting(32000, low=8000, cache_key=True)  # the mel front end's rate; clips at another rate are
    # resampled on the device (NTU: 44100)
    eval_batch_size: int = setting(0, low=0, cache_key=False)  # 0: 1024 on a GPU, 32 on a CPU; evaluation changes no
    # weight
    # fp32 by default, as every reference trains its teachers; bf16 (or auto: bf16 on a GPU) trades exactness for speed
    precision: str = setting("fp32", choices=PRECISIONS, cache_key=True)
    # (torch.autocast)
    seed: int = seed_setting(cache_key=True)  # an ensemble's members are seed … seed + ensemble − 1
    # Where the KD search's teacher comes from, and how it is trained (the stages before fine-tuning are keyed by
    # their own settings, and the member's key holds their file names):
    pretrain: str = setting("none", choices=PRETRAINING, cache_key=False)  # "synthetic": pretrain passt_tiny or cnn
    # once on the synthetic AudioSet stand-in
    pretrain_epochs: int = setting(10, low=1, cache_key=False)
    backbone_lr_ratio: float = setting(1.0, low=0.0, high=1.0, low_open=True, cache_key=False)  # lr of all but the new
    # head, relative to lr, in (0, 1]; < 1: SIT's slow learner. In the member's key beside these
    # CochlScene root: train on it first, then continue on the subset (SIT); its prepared data's fingerprint is keyed
    cochlscene: str | None = path_setting("dir", cache_key=False)
    sit_epochs: int = setting(5, low=1, cache_key=False)  # epochs of the CochlScene stage (NTU: 25) …
    sit_lr: float | None = setting(None, low=0.0, low_open=True, high=MAX_LR, cache_key=False)  # … its backbone lr (None:
    # lr; NTU: 1e-4) …
    sit_batch_size: int | None = setting(None, low=1, cache_key=False)  # … and its batch size (None: batch_size; NTU: 32)
    ensemble: int = setting(1, low=1, cache_key=False)  # teachers per subset (seeds seed … seed+ensemble−1), their
    # logits averaged; each member is keyed by its own seed
    # distil from these logits files instead of training ({subset} becomes the subset, so they are not looked for
    # here); several are averaged into one teacher, as NTU builds its ensembles (a single path is a list of one).
    # Nothing is trained then
    logits: tuple[str, ...] = path_setting("file", must_exist=False, many=True, cache_key=False)
    # on real data, distil from a teacher that starts without AudioSet weights (a check, not a weight)
    allow_untrained: bool = flag(False, cache_key=False)
    # distil from a teacher within 5 points of chance on the validation split (refused otherwise, before any student
    # trains; a check, not a weight)
    allow_weak: bool = flag(False, cache_key=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_step_budget(self.train_steps, self.epochs)
        if self.seed + self.ensemble - 1 > SEED_HIGH:
            raise SettingError("seed", f"{self.seed} + ensemble {self.ensemble} − 1 must be at most {SEED_HIGH} (the "
                                       "members' seeds are seed … seed + ensemble − 1)")  # fmt: skip
        if self.pretrain == "synthetic" and self.arch not in FROM_SCRATCH:
            raise SettingError("pretrain", f"synthetic pretraining is for {' and '.join(FROM_SCRATCH)}; the standard "
                                           "PaSST takes weights")  # fmt: skip
        if self.arch == TINY_ARCH and self.embed_dim % self.num_heads:  # PaSST splits its width evenly over the heads
            raise SettingError("embed_dim", f"{self.embed_dim} must be a multiple of num_heads ({self.num_heads})")

    def rates(self) -> tuple[float, float]:
        """The learning rates of the optimiser's two groups: (the backbone's, the heads' with their LayerNorm)."""
        return self.lr * self.backbone_lr_ratio, self.head_lr or self.lr

    def stage(self, name: str) -> "TeacherConfig":
        """The settings of one training stage: `pretrain` (synthetic AudioSet stand-in), `sit` (CochlScene, its own
        epochs, lr and batch size) or `finetune` (the subset, as configured)."""
        if name == "pretrain":
            return replace(self, epochs=self.pretrain_epochs, train_steps=0)
        if name == "sit":
            return replace(self, epochs=self.sit_epochs, lr=self.sit_lr or self.lr, batch_size=self.sit_batch_size or self.batch_size,
                           train_steps=0)  # fmt: skip
        return self


class Teacher(nn.Module):
    """Waveform [B, samples] at `source_rate` → class logits [B, n_classes]; the loops see only this interface.

    A step is `classify(spectrogram(waveform_at_rate(w)))`, with the batch augmentations (time roll before,
    Freq-MixStyle between) applied by the loop; `spectrogram` applies the front end's own masks in training.
    """

    rate: int  # the rate the front end expects
    source_rate: int  # the rate of the clips it is given; set by the loops

    def waveform_at_rate(self, waveform: torch.Tensor) -> torch.Tensor:
        """Clips at `source_rate` resampled, on their device, to the rate the front end expects."""
        if self.source_rate == self.rate:
            return waveform
        return torchaudio.functional.resample(waveform, self.source_rate, self.rate)

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, samples] at `rate` → [B, 1, mel bins, frames], masked in training."""
        raise NotImplementedError

    def classify(self, spec: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.classify(self.spectrogram(self.waveform_at_rate(waveform)))

    def logits(self, waveform: torch.Tensor, precision: str) -> torch.Tensor:
        """fp32 logits, the network run in `precision` (the front end always in fp32)."""
        spec = self.spectrogram(self.waveform_at_rate(waveform))
        with autocast(precision, waveform.device):
            return self.classify(spec).float()


def build_teacher(config: TeacherConfig, n_classes: int) -> Teacher:
    return CnnTeacher(config, n_classes) if config.arch == CNN_ARCH else PasstTeacher(config, n_classes)


class PasstTeacher(Teacher):
    """PaSST (the standard one or passt_tiny) on hear21passt's mel front end."""

    def __init__(self, config: TeacherConfig, n_classes: int):
        super().__init__()
        passt_module, preprocess = _hear21passt()
        # NTU keeps these window and hop lengths (in samples) at 44.1 kHz: ≈ 18 ms and 7 ms, 138 frames a second.
        self.mel = preprocess.AugmentMelSTFT(n_mels=128, sr=config.sample_rate, win_length=800, hopsize=320, n_fft=1024,
                                             freqm=config.freqm, timem=config.timem, fmin_aug_range=1,
                                             fmax_aug_range=1000)  # fmt: skip
        patchout = dict(s_patchout_t=config.s_patchout_t, s_patchout_f=config.s_patchout_f)
        if config.arch == TINY_ARCH:
            self.net = passt_module.PaSST(
                # one second at the mel's 320-sample hop: 101 frames at 32 kHz, 138 at 44.1 kHz
                img_size=(128, config.sample_rate // 320 + 1), patch_size=16, stride=(10, 10), in_chans=1, num_classes=n_classes,
                embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads, distilled=True,
                drop_path_rate=config.drop_path_rate, **patchout,
            )  # fmt: skip
        elif config.arch == STANDARD_ARCH:
            # Built for AudioSet's 10-s inputs (998 frames), so the time positional embedding keeps all 99 of its
            # patches; a 1-s clip uses a window of them (see _time_window).
            with contextlib.redirect_stdout(io.StringIO()):  # get_model prints the whole network
                self.net = passt_module.get_model(arch=STANDARD_ARCH, pretrained=False, n_classes=n_classes,
                                                  input_tdim=AUDIOSET_FRAMES, **patchout)  # fmt: skip
            if config.weights:
                load_audioset_weights(self.net, Path(config.weights))
            self.net.patch_embed.register_forward_hook(self._time_window)
        else:
            raise ValueError(f"unknown PaSST arch {config.arch!r}; expected {TINY_ARCH} or {STANDARD_ARCH}")
        self.rate = config.sample_rate
        self.source_rate = config.sample_rate

    def _time_window(self, _module: nn.Module, _inputs: tuple, patches: torch.Tensor) -> torch.Tensor:
        """In training, a random window of the 10-s time positional embedding instead of its first patches.

        hear21passt adds the embedding's first T patches to T time patches; this hook, run just before,
        adds the difference to a window at a random offset, as the references' PaSST does. Evaluation
        keeps the first patches."""
        embedding = self.net.time_new_pos_embed
        width, spare = patches.shape[-1], embedding.shape[-1] - patches.shape[-1]
        if not self.training or spare <= 0:
            return patches
        offset = int(torch.randint(spare + 1, (1,)))
        return patches + embedding[..., offset : offset + width] - embedding[..., :width]

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.mel(waveform).unsqueeze(1)  # AugmentMelSTFT masks in training mode itself

    def classify(self, spec: torch.Tensor) -> torch.Tensor:
        logits, _features = self.net(spec)
        return logits


class CnnTeacher(Teacher):
    """The student's network and front end, `width` channels wide; its classifier is `net.head` (see is_head)."""

    def __init__(self, config: TeacherConfig, n_classes: int):
        super().__init__()
        self.frontend = LogMel(FrontendConfig(sample_rate=config.sample_rate))
        # channels_last makes the depthwise convolutions about 1.5× faster on a CPU, as for the student.
        self.net = Student(StudentArch(n_classes=n_classes, base_channels=config.width)).to(memory_format=torch.channels_last)
        self.freqm = config.freqm
        self.rate = config.sample_rate
        self.source_rate = config.sample_rate

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = self.frontend(waveform)
        return frequency_mask(spec, self.freqm, fill=MASKED_LOG_MEL) if self.training else spec

    def classify(self, spec: torch.Tensor) -> torch.Tensor:
        return self.net(spec.contiguous(memory_format=torch.channels_last))


def load_audioset_weights(net: nn.Module, path: Path) -> None:
    """Load AudioSet PaSST weights from a local file, dropping the 527-class heads (as hear21passt does)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    passt_module, _ = _hear21passt()
    try:
        state = passt_module.checkpoint_filter_fn(state, net)
    except (KeyError, RuntimeError, AttributeError) as err:  # hear21passt's filter assumes PaSST or ViT keys
        raise ValueError(f"{path} does not fit {STANDARD_ARCH}: {err!r}") from None
    state = {k: v for k, v in state.items() if not k.startswith(("head.1", "head_dist"))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith(("head.1", "head_dist"))]:
        raise ValueError(f"{path} does not fit {STANDARD_ARCH}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def is_head(name: str) -> bool:
    """Parameters of the classification heads (PaSST's, their LayerNorm head.0 included; the CNN's last convolution
    and its BatchNorm): a new task (SIT's TAU22 stage, fine-tuning after pretraining) starts them afresh, and they
    learn at head_lr."""
    return name.startswith(("net.head.", "net.head_dist"))
