"""Train OS-KDFT2 (one-step distillation + speaker fine-tuning), and export the student: plain PyTorch, no Ray.

`train_oskdft2` reads top to bottom: build the frozen teacher and the student initialised from it
(`build_oskdft2`), then for each epoch set the curriculum's target share p, and for every batch of
target-domain training utterances
  1. draw a distillation batch: each utterance from the target domain with probability p, else
     from the out-of-domain corpus, and crop both batches independently;
then `oskdft2_step` on the device:
  2. run the student once on both batches together (as OS-KDFT2 does: one shared student), with
     its training-time dropout, layer drop and time masking;
  3. KD: the prediction heads on the student's last layer against the teacher's hidden states
     of the distillation batch (DistilHuBERT's L1 − log σ(cos) loss);
  4. FT: the TFT turns the student's layer outputs of the target batch into speaker embeddings,
     scored by the speaker loss (softmax or AAM, optionally class-weighted);
  5. step Adam on kd_weight · KD + ft_weight · FT;
then score the validation trials (full utterances, OS-KDFT2's 5 crops, or both fused; EER,
minDCF) and hand the epoch's metrics and a checkpoint to `on_epoch`. The Ray trainable passes an
`on_epoch` that reports to Tune; tests pass a list.

Every tensor a step makes lives on the device of its batch, and the step does not wait for the
device: losses add up there, and finiteness is checked every `FINITE_CHECK_EVERY` steps and at the
end of each epoch (a NaN trial still fails, naming its epoch).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.common import (
    FINITE_CHECK_EVERY, EpochCallback, check_finite, count_parameters, resolve_device, restore_rng_state, rng_state,
)
from trainables.precision import RESOLVED, autocast
from trainables.prepared import DatasetError
from trainables.settings import MAX_LR, Rule, Settings, flag, nested, seed_setting, setting
from trainables.speaker.curriculum import SCHEDULES, target_share
from trainables.speaker.data import SpeakerData, train_batches
from trainables.speaker.evaluation import EVAL_SCORES, score_trials
from trainables.speaker.losses import AAM_MARGIN, COS_REDUCTIONS, LOSSES, SpeakerLoss, distill_loss
from trainables.speaker.student import (
    PredictionHeads,
    SpeakerStudent,
    StudentMasking,
    TftConfig,
    default_target_layers,
    init_student_from_teacher,
)  # fmt: skip
from trainables.speaker.teacher import SslConfig, build_teacher, freeze, hidden_states


@dataclass(frozen=True)
class OskdftConfig(Settings):
    """One OS-KDFT2 trial's settings. Defaults suit the embedded synthetic default on a CPU;
    the paper's values (HuBERT-Base teacher, VoxCeleb1; spaces/oskdft2_vox1.yaml) are given where
    they differ.

    Searchable: p0, schedule, kd_weight, ft_weight, lr (and any other number or word here).
    """

    # Curriculum (trainables/speaker/curriculum.py)
    p0: float = setting(0.1, low=0.0, high=1.0)  # target-domain share of the distillation batch at epoch 1, in [0, 1]
    # (paper: 1/epochs)
    schedule: str = setting("linear", choices=SCHEDULES)  # linear (paper) | cosine | exponential | step | constant
    # Losses: loss = kd_weight · KD + ft_weight · FT
    kd_weight: float = setting(1.0, low=0.0)  # ≥ 0 (0: fine-tuning only)
    ft_weight: float = setting(1.0, low=0.0)  # ≥ 0
    cos_weight: float = setting(1.0, low=0.0)  # λ of the −log σ(cos) term inside KD (DistilHuBERT and OS-KDFT: 1)
    cos_reduction: str = setting("mean", choices=COS_REDUCTIONS)  # KD's cosine term over frames: mean (DistilHuBERT) |
    # sum (paper's code)
    loss: str = setting("softmax", choices=LOSSES)  # speaker loss: softmax (OS-KDFT2's code) | aam
    aam_margin: float = setting(0.2, rule=AAM_MARGIN)  # radians, AAM only
    aam_scale: float = setting(30.0, low=0.0, low_open=True)  # AAM only
    class_weighted: bool = flag(False)  # speaker cross-entropy weighted by N / N_speaker (paper's code: yes)
    # Optimisation: one Adam over student, TFT, heads and classifier, constant learning rate (as the paper)
    lr: float = setting(1e-3, low=0.0, low_open=True, high=MAX_LR)  # paper: 5e-5 for the 94 M-parameter base models
    weight_decay: float = setting(1e-4, low=0.0)  # Adam's L2 term (paper: 1e-4)
    epochs: int = setting(12, low=1)  # passes over the target-domain training utterances (paper: 100)
    batch_size: int = setting(16, low=1)  # utterances per branch; the student sees twice as many (paper: 50)
    crop_seconds: float = setting(2.0, low=0.0, low_open=True)  # training crop, both branches (paper: 3.0)
    precision: str = setting("fp32", choices=RESOLVED)  # fp32 | bf16 | fp16: torch.autocast of the forward passes (fp16
    # with loss scaling)
    # Student regularisation (the paper's student takes HuBERT base's hub config: 0.1, 0.1, 0.05)
    dropout: float = setting(0.0, low=0.0, high=1.0, high_open=True)  # student dropout (attention, FFN, projection,
    # encoder)
    layer_drop: float = setting(0.0, low=0.0, high=1.0, high_open=True)  # probability of skipping each student layer in
    # a training step
    time_mask_prob: float = setting(0.0, low=0.0, high=1.0, high_open=True)  # time masking of the student's features
    # (HuggingFace's mask_time_prob)
    time_mask_span: int = setting(10, low=1)  # frames per masked span
    time_mask_min_spans: int = setting(2, low=0)  # spans per utterance at least
    freeze_extractor: bool = flag(False)  # keep the student's copied conv front end fixed (halves CPU time)
    # Architecture
    teacher: SslConfig = nested(SslConfig)  # noqa: RUF009 (a field, made once; each instance gets its own default)
    student_layers: int = setting(2, low=1)  # at most the teacher's layers (checked below)
    init_layers: tuple[int, ...] = setting((), rule=Rule(kind="items", item=Rule(low=0)))  # teacher layers (0-based)
    # copied into the student, one per student layer (checked below); (): 0, 1, …
    copy_positional: bool = flag(True)  # also copy positional conv and encoder layer norm (paper's code: no)
    target_layers: tuple[int, ...] = setting((), rule=Rule(kind="items", item=Rule(low=1)))  # teacher layers (1-based,
    # up to its depth: checked below) the heads predict; (): the thirds (4, 8, 12)
    embedding_dim: int = setting(192, low=1)
    tft_bottleneck: int = setting(0, low=0)  # 0: width / 12
    tft_attention: int = setting(0, low=0)  # 0: width / 8
    tft_noise: bool = flag(True)
    tft_residual: bool = flag(True)  # the TFT's tuners add their input back (paper's DistTuner: no)
    # Evaluation (on the validation trials when the dataset has them, else the test trials)
    eval_score: str = setting("full", choices=EVAL_SCORES)  # full: cosine of full utterances | crops: OS-KDFT2's 5 ×
    # 3-s crops | fused: their mean
    eval_max_seconds: float = setting(20.0, low=0.0)  # full utterances longer than this are centre-cropped (0: never,
    # as the paper)
    eval_crops: int = setting(5, low=1)  # crops per utterance for the crops score, evenly spaced
    eval_crop_seconds: float = setting(3.0, low=0.0, low_open=True)
    seed: int = seed_setting()

    def __post_init__(self) -> None:
        super().__post_init__()
        layers = self.teacher.arch()["layers"]
        init = self.init_layers or tuple(range(self.student_layers))
        if len(init) != self.student_layers or not all(0 <= i < layers for i in init):
            raise ValueError(
                f"init_layers {init} must name {self.student_layers} of the teacher's layers 0..{layers - 1}"
            )
        if not all(1 <= k <= layers for k in self.target_layers):
            raise ValueError(f"target_layers {self.target_layers} must lie in 1..{layers}")

    def as_dict(self) -> dict:
        return asdict(self)

    def tft(self) -> TftConfig:
        return TftConfig(self.embedding_dim, self.tft_bottleneck, self.tft_attention, self.tft_noise, self.tft_residual)

    def targets(self) -> tuple[int, ...]:
        return self.target_layers or default_target_layers(self.teacher.arch()["layers"])



def student_export(model: SpeakerStudent, config: OskdftConfig, metrics: dict, teacher_params: int) -> dict:
    """The self-contained student file: the SSL student and its TFT, and what rebuilds them."""
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": {
            "ssl": config.teacher.as_dict(),
            "student_layers": config.student_layers,
            "tft": asdict(config.tft()),
            "sample_rate": 16000,
            "student_params": count_parameters(model),
            "student_ssl_params": count_parameters(model.student),
            "teacher_params": teacher_params,
            "train": config.as_dict(),
        },
        "metrics": dict(metrics),
    }


def load_speaker_student(path: str | Path, device: torch.device | str = "cpu") -> tuple[SpeakerStudent, dict]:
    """Rebuild an exported student: (model in eval mode, its metrics). model(waveform_16k) → embeddings."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    model = SpeakerStudent(SslConfig.from_dict(config["ssl"]), config["student_layers"], TftConfig(**config["tft"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), saved["metrics"]


@dataclass
class OskdftParts:
    """Everything an OS-KDFT2 training step touches, on one device."""

    teacher: nn.Module  # frozen
    model: SpeakerStudent  # what ships: SSL student + TFT
    heads: PredictionHeads  # training only, like the two below
    speaker_loss: SpeakerLoss
    masking: StudentMasking
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 only

    def train(self) -> None:
        for module in (self.model, self.heads, self.speaker_loss, self.masking):
            module.train()


def build_oskdft2(
    config: OskdftConfig, teacher: dict[str, torch.Tensor] | nn.Module, speaker_counts: np.ndarray,
    device: torch.device,
) -> OskdftParts:  # fmt: skip
    """The frozen teacher, the student initialised from it, the training-only parts and Adam, on `device`.

    speaker_counts: training utterances per speaker (the classes of the speaker loss, in label order).
    """
    teacher_model = teacher if isinstance(teacher, nn.Module) else build_teacher(config.teacher, teacher)
    teacher_model = freeze(teacher_model)
    model = SpeakerStudent(config.teacher, config.student_layers, config.tft(), config.dropout, config.layer_drop)
    init_student_from_teacher(model.student, teacher_model, config.init_layers or tuple(range(config.student_layers)),
                              config.copy_positional)  # fmt: skip
    teacher_model.to(device)  # after the copy: the weights are read where they are
    model.to(device)
    dim = config.teacher.arch()["embed_dim"]
    heads = PredictionHeads(dim, len(config.targets())).to(device)
    counts = torch.as_tensor(np.asarray(speaker_counts), dtype=torch.float32)
    weights = counts.sum() / counts if config.class_weighted else None  # N / N_speaker, as OS-KDFT2's CCE
    speaker_loss = SpeakerLoss(config.embedding_dim, len(counts), config.loss, config.aam_margin, config.aam_scale,
                               weights).to(device)  # fmt: skip
    masking = StudentMasking(dim, config.time_mask_prob, config.time_mask_span, config.time_mask_min_spans).to(device)
    if config.freeze_extractor:
        model.student.ssl.feature_extractor.requires_grad_(False)
    trainable = [p for m in (model, heads, speaker_loss, masking) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    return OskdftParts(teacher_model, model, heads, speaker_loss, masking, optimizer, scaler)


def oskdft2_step(
    parts: OskdftParts, config: OskdftConfig, x_kd: torch.Tensor, x_ft: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One training step on a batch already on the device: distillation crops x_kd and target crops
    x_ft [batch, samples], speaker labels [batch]. Returns the step's losses and speaker accuracy as
    0-d tensors on the device (detached; reading them is the caller's choice)."""
    n = x_kd.shape[0]
    with autocast(config.precision, x_kd.device):
        with torch.no_grad():
            teacher_states = hidden_states(parts.teacher, x_kd)
        layers = parts.model.student(torch.cat([x_kd, x_ft]), parts.masking)
        predictions = parts.heads(layers[-1][:n])
        embedding = parts.model.tft([h[n:] for h in layers])
    # The losses in fp32, whatever the forward passes ran in.
    targets = [teacher_states[k - 1].float() for k in config.targets()]
    kd = distill_loss([p.float() for p in predictions], targets, config.cos_weight, config.cos_reduction)
    ft, accuracy = parts.speaker_loss(embedding.float(), labels)
    loss = config.kd_weight * kd + config.ft_weight * ft
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.scaler is None:
        loss.backward()
        parts.optimizer.step()
    else:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    return {"kd_loss": kd.detach(), "ft_loss": ft.detach(), "train_loss": loss.detach(), "ft_accuracy": accuracy}


def train_oskdft2(
    config: OskdftConfig,
    data: SpeakerData,
    teacher: dict[str, torch.Tensor] | nn.Module,
    on_epoch: EpochCallback,
    resume: dict | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Train one OS-KDFT2 student and return the last epoch's metrics.

    teacher: the teacher's torchaudio state dict (built with `config.teacher`), or the model itself
        (it is frozen and moved to `device` in place).
    on_epoch(metrics, make_checkpoint): called after every epoch; make_checkpoint() returns
        {"student": the export of `student_export`, "train_state": what `resume` takes}.
    resume: a previous `train_state`, to continue after its epoch.
    device: where to train; the GPU when there is one.
    """
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_rows, ood_rows = data.rows("target", "train"), data.rows("ood", "train")
    if len(train_rows) < 2:
        raise DatasetError(f"{data.directory}: fewer than 2 target-domain training utterances")
    speaker_counts = np.bincount(data.labels[train_rows], minlength=len(data.train_speakers))
    parts = build_oskdft2(config, teacher, speaker_counts, device)
    model = parts.model
    labels = torch.as_tensor(data.labels)
    crop = int(config.crop_seconds * data.sample_rate)
    eval_split = "val" if "val" in data.trials else "test"
    teacher_params = count_parameters(parts.teacher)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer, whose state follows the parameters' device
        parts.heads.load_state_dict(resume["heads"])
        parts.speaker_loss.load_state_dict(resume["speaker_loss"])
        if "masking" in resume:
            parts.masking.load_state_dict(resume["masking"])
        parts.optimizer.load_state_dict(resume["optimizer"])
        if parts.scaler is not None and resume.get("scaler"):
            parts.scaler.load_state_dict(resume["scaler"])
        restore_rng_state(resume, device)
        first_epoch = int(resume["epoch"])

    def embed(waveform: torch.Tensor) -> torch.Tensor:
        with autocast(config.precision, waveform.device):
            return model(waveform)

    def score(split: str) -> dict[str, float]:
        return score_trials(embed, data, data.trials[split], device, config.eval_max_seconds, config.eval_score,
                            config.eval_crops, config.eval_crop_seconds)  # fmt: skip

    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        share = target_share(config.schedule, config.p0, epoch + 1, config.epochs)
        parts.train()
        # Out-of-domain utterances in a fresh order every epoch, taken in turn (OS-KDFT2's shuffle_kd_items).
        ood_order = ood_rows[torch.randperm(len(ood_rows)).numpy()] if len(ood_rows) else ood_rows
        ood_next = 0
        sums = {k: torch.zeros((), device=device) for k in ("kd_loss", "ft_loss", "train_loss", "ft_accuracy")}
        from_target_count, seen, step = 0, 0, -1
        for step, rows in enumerate(train_batches(train_rows, config.batch_size)):
            n = len(rows)
            # Which corpus each distillation utterance comes from is a host-side choice: it decides
            # which rows are read from the memory-mapped audio. Without an out-of-domain corpus every
            # distillation utterance is a target-domain one.
            from_target = (torch.rand(n) < share).numpy() | (len(ood_rows) == 0)
            kd_rows = train_rows[torch.randint(len(train_rows), (n,)).numpy()]
            if len(ood_rows):
                ood_pick = ood_order[(ood_next + np.arange(n)) % len(ood_order)]
                ood_next += n
                kd_rows = np.where(from_target, kd_rows, ood_pick)
            x_kd, x_ft = data.crops(kd_rows, crop).to(device), data.crops(rows, crop).to(device)
            found = oskdft2_step(parts, config, x_kd, x_ft, labels[rows].to(device))
            for key, value in found.items():
                sums[key] += value * n
            from_target_count += int(from_target.sum())
            seen += n
            if (step + 1) % FINITE_CHECK_EVERY == 0:
                check_finite(sums["train_loss"], epoch + 1, step)
        check_finite(sums["train_loss"], epoch + 1, step)
        train_seconds = time.perf_counter() - started

        model.eval()
        metrics = score(eval_split)
        metrics.update({k: v.item() / max(seen, 1) for k, v in sums.items()})
        metrics.update(kd_target_fraction=from_target_count / max(seen, 1), target_share=share, epoch=epoch + 1,
                       lr=config.lr, utterances_per_second=seen / train_seconds, student_params=count_parameters(model),
                       teacher_params=teacher_params, train_speakers=int(np.count_nonzero(speaker_counts)))  # fmt: skip
        if epoch + 1 == config.epochs:
            test = metrics if eval_split == "test" else score("test")
            metrics.update({f"test_{k}": test[k] for k in ("eer", "min_dcf", "min_dcf_p05")})

        def make_checkpoint(epoch_done: int = epoch + 1, epoch_metrics: dict = dict(metrics)) -> dict:
            return {
                "student": student_export(model, config, epoch_metrics, teacher_params),
                # state_dict()s hold the live tensors: copy, so the checkpoint stays the epoch's.
                "train_state": copy.deepcopy({
                    "model": model.state_dict(),
                    "heads": parts.heads.state_dict(),
                    "speaker_loss": parts.speaker_loss.state_dict(),
                    "masking": parts.masking.state_dict(),
                    "optimizer": parts.optimizer.state_dict(),
                    "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
                    **rng_state(device),
                    "epoch": epoch_done,
                }),
            }

        on_epoch(metrics, make_checkpoint)
    return metrics

