"""The PaSST teacher, built with hear21passt's own model code, and its training loop (plain PyTorch).

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
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.asc_data import AscData
from trainables.augment import freq_mixstyle, time_roll
from trainables.loader import Batch, clip_batches
from trainables.loop import FINITE_CHECK_EVERY, check_finite, default_device, eval_batch_size, predict, split_metrics, warmup_cosine
from trainables.precision import allow_tf32, autocast, grad_scaler, resolve

STANDARD_ARCH = "passt_s_swa_p16_128_ap476"
TINY_ARCH = "passt_tiny"
ARCHS = (TINY_ARCH, STANDARD_ARCH)


def _hear21passt():
    """hear21passt's model and front-end modules, imported on first use: with timm and torchvision they cost
    2 s and about 100 MB, which validating a space file or running a student trial never needs."""
    from hear21passt.models import passt, preprocess

    passt.first_RUN = False  # it prints tensor shapes on its first forward pass otherwise
    return passt, preprocess


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher's settings. Learning rates are per step of Adam; epochs over the subset."""

    arch: str = TINY_ARCH  # passt_tiny or passt_s_swa_p16_128_ap476
    weights: str | None = None  # local AudioSet checkpoint for the standard arch (None: random init)
    embed_dim: int = 96  # passt_tiny only
    depth: int = 2  # passt_tiny only
    num_heads: int = 4  # passt_tiny only
    drop_path_rate: float = 0.0  # stochastic depth, passt_tiny only
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3  # the seeds fine-tune the pretrained standard PaSST at 1e-5
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.1
    s_patchout_t: int = 0
    s_patchout_f: int = 0  # the seeds drop 6 of the standard model's 12 frequency patches
    freqm: int = 0  # frequency-mask width of the mel front end, bins of 128 (the seeds: 48)
    timem: int = 0  # time-mask width, frames of 101 per second (the seeds: 20)
    mixstyle_p: float = 0.4
    mixstyle_alpha: float = 0.4
    roll_sec: float = 0.1
    eval_batch_size: int = 0  # 0: 1024 on a GPU, 128 on a CPU
    precision: str = "auto"  # auto (bf16 on a GPU, fp32 on a CPU), fp32, bf16 or fp16 (torch.autocast)
    seed: int = 0
    # Where the KD search's teacher comes from, and how it is trained:
    pretrain: str = "none"  # "synthetic": pretrain passt_tiny once on the synthetic AudioSet stand-in
    pretrain_epochs: int = 10
    backbone_lr_ratio: float = 1.0  # lr of all but the new head, relative to lr, in (0, 1]; < 1: SIT's slow learner
    cochlscene: str | None = None  # CochlScene root: train on it first, then continue on the subset (SIT)
    sit_epochs: int = 5  # epochs of the CochlScene stage
    ensemble: int = 1  # teachers per subset (seeds seed … seed+ensemble−1) whose logits are averaged
    logits: str | None = None  # distil from this logits file instead of training ({subset} becomes the subset)

    @classmethod
    def from_dict(cls, values: dict) -> "TeacherConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class PasstTeacher(nn.Module):
    """Waveform [B, samples] at 32 kHz → class logits [B, n_classes]."""

    def __init__(self, config: TeacherConfig, n_classes: int):
        super().__init__()
        passt_module, preprocess = _hear21passt()
        self.mel = preprocess.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=config.freqm,
                                  timem=config.timem, fmin_aug_range=1, fmax_aug_range=1000)  # fmt: skip
        patchout = dict(s_patchout_t=config.s_patchout_t, s_patchout_f=config.s_patchout_f)
        if config.arch == TINY_ARCH:
            self.net = passt_module.PaSST(
                img_size=(128, 101), patch_size=16, stride=(10, 10), in_chans=1, num_classes=n_classes,
                embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads, distilled=True,
                drop_path_rate=config.drop_path_rate, **patchout,
            )  # fmt: skip
        elif config.arch == STANDARD_ARCH:
            with contextlib.redirect_stdout(io.StringIO()):  # get_model prints the whole network
                self.net = passt_module.get_model(arch=STANDARD_ARCH, pretrained=False, n_classes=n_classes,
                                                  input_tdim=101, **patchout)  # fmt: skip
            if config.weights:
                load_audioset_weights(self.net, Path(config.weights))
        else:
            raise ValueError(f"unknown teacher arch {config.arch!r}; expected one of {', '.join(ARCHS)}")

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        logits, _features = self.net(self.mel(waveform).unsqueeze(1))
        return logits

    def logits(self, waveform: torch.Tensor, precision: str) -> torch.Tensor:
        """fp32 logits, the network run in `precision` (the mel front end always in fp32)."""
        spec = self.mel(waveform).unsqueeze(1)
        with autocast(precision, waveform.device):
            logits, _features = self.net(spec)
        return logits.float()


def load_audioset_weights(net: nn.Module, path: Path) -> None:
    """Load AudioSet PaSST weights from a local file, dropping the 527-class heads (as hear21passt does)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    passt_module, _ = _hear21passt()
    try:
        state = passt_module.checkpoint_filter_fn(state, net)
    except (KeyError, RuntimeError, AttributeError) as err:  # hear21passt's filter assumes PaSST or ViT keys
        raise ValueError(f"{path} does not fit {STANDARD_ARCH}: {err!r}") from None
    own = net.state_dict()
    # The time positional embedding covers 10 s; a 1-s input uses its first patches, as PaSST crops at run time.
    if "time_new_pos_embed" in state and state["time_new_pos_embed"].shape != own["time_new_pos_embed"].shape:
        state["time_new_pos_embed"] = state["time_new_pos_embed"][..., : own["time_new_pos_embed"].shape[-1]]
    state = {k: v for k, v in state.items() if not k.startswith(("head.1", "head_dist"))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith(("head.1", "head_dist"))]:
        raise ValueError(f"{path} does not fit {STANDARD_ARCH}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def is_head(name: str) -> bool:
    """Parameters of the classification heads, which a new task replaces."""
    return name.startswith(("net.head.1", "net.head_dist"))


def teacher_loss(model: PasstTeacher, batch: Batch, labels: torch.Tensor, config: TeacherConfig,
                 precision: str) -> torch.Tensor:  # fmt: skip
    """One step's cross-entropy on an augmented batch (time roll, the mel front end's masks, Freq-MixStyle),
    all on the batch's device; `labels` [clips] live there too."""
    spec = model.mel(time_roll(batch.waveform, int(config.roll_sec * model.mel.sr))).unsqueeze(1)
    spec = freq_mixstyle(spec, config.mixstyle_p, config.mixstyle_alpha)
    with autocast(precision, spec.device):
        logits = model.net(spec)[0]
    return F.cross_entropy(logits.float(), labels[batch.index])


def train_teacher(
    config: TeacherConfig,
    data: AscData,
    subset: int,
    on_epoch: Callable[[dict[str, float], "PasstTeacher"], None] = lambda metrics, model: None,
    device: torch.device | None = None,
    init_state: dict | None = None,
    epochs: int | None = None,
) -> tuple[PasstTeacher, dict[str, float]]:
    """Train a teacher on one training subset; return it with its last validation metrics.

    on_epoch(metrics, model): called after every epoch with the validation figures.
    init_state: a previous teacher's state dict (e.g. after CochlScene, SIT's first stage) to continue
        from; its classification heads are dropped, since the classes differ. Everything but the
        new heads then learns at lr · backbone_lr_ratio.
    epochs: overrides config.epochs (the SIT stage uses sit_epochs).
    """
    device = device or default_device()
    allow_tf32(device)
    precision = resolve(config.precision, device)
    torch.manual_seed(config.seed)
    epochs = epochs or config.epochs
    model = PasstTeacher(config, len(data.classes))
    if init_state is not None:
        kept = {k: v for k, v in init_state.items() if not is_head(k)}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        if unexpected or any(not is_head(k) for k in missing):
            raise ValueError(f"the SIT checkpoint does not fit this teacher: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model = model.to(device)
    rows = data.splits[f"split{subset}"]
    train_devices = data.train_devices(subset)
    steps_per_epoch = -(-len(rows) // config.batch_size)
    total_steps = steps_per_epoch * epochs
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not is_head(n)], "lr": config.lr * config.backbone_lr_ratio},
        {"params": [p for n, p in named if is_head(n)], "lr": config.lr},
    ]
    optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    scaler = grad_scaler(precision, device)
    labels = torch.as_tensor(data.labels).to(device)
    eval_batch = eval_batch_size(config.eval_batch_size, device, on_cpu=128)
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        for step, batch in enumerate(clip_batches(data, rows, config.batch_size, True, device)):
            loss = teacher_loss(model, batch, labels, config, precision)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(batch.rows)
            if step % FINITE_CHECK_EVERY == 0:
                check_finite(loss_sum, epoch + 1, step)
        check_finite(loss_sum, epoch + 1, steps_per_epoch - 1)
        model.eval()
        val = data.splits["val"]
        val_logits = predict(lambda w: model.logits(w, precision), data, val, eval_batch, device)
        metrics = split_metrics(val_logits, data, val, train_devices)
        metrics.update(train_loss=loss_sum.item() / len(rows), epoch=epoch + 1, seconds=time.perf_counter() - started)
        on_epoch(metrics, model)
    return model, metrics


def teacher_logits(model: PasstTeacher, data: AscData, batch_size: int = 0, precision: str = "auto") -> np.ndarray:
    """fp32 logits [clips, classes] for every clip of the dataset, in row order, without augmentation; the
    network runs in `precision` (auto: bf16 on a GPU)."""
    model.eval()
    device = next(model.parameters()).device
    rows = np.arange(len(data.filenames))
    logits = predict(lambda w: model.logits(w, resolve(precision, device)), data, rows,
                     eval_batch_size(batch_size, device, on_cpu=128), device)  # fmt: skip
    return logits.numpy()
