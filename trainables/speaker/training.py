"""Train OS-KDFT2 (one-step distillation + speaker fine-tuning) and its teacher: plain PyTorch, no Ray.

`train_oskdft2` reads top to bottom: build the frozen teacher and the student initialised from it,
then for each epoch set the curriculum's target share p, and for every batch of target-domain
training utterances
  1. draw a distillation batch: each utterance from the target domain with probability p, else
     from the out-of-domain corpus, and crop both batches independently;
  2. run the student once on both batches together (as OS-KDFT2 does: one shared student);
  3. KD: the prediction heads on the student's last layer against the teacher's hidden states
     of the distillation batch (DistilHuBERT's L1 − log σ(cos) loss);
  4. FT: the TFT turns the student's layer outputs of the target batch into speaker embeddings,
     scored by the speaker loss (softmax or AAM);
  5. step Adam on kd_weight · KD + ft_weight · FT;
then score the trial list with cosine similarity of full-utterance embeddings (EER, minDCF) and
hand the epoch's metrics and a checkpoint to `on_epoch`. The Ray trainable passes an `on_epoch`
that reports to Tune; tests pass a list.

`train_ssl_teacher` gives the embedded default a teacher worth distilling, standing in for SSL
pretraining on LibriSpeech (see its docstring).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from trainables.loop import check_finite, default_device, warmup_cosine
from trainables.speaker.curriculum import SCHEDULES, target_share
from trainables.speaker.data import DatasetError, SpeakerData, Trials
from trainables.speaker.metrics import cosine_scores, verification_metrics
from trainables.speaker.models import (
    FRAME_STRIDE, PredictionHeads, SpeakerLoss, SpeakerStudent, SslConfig, TftConfig, build_ssl, build_teacher,
    count_parameters, default_target_layers, distill_loss, freeze, hidden_states, init_student_from_teacher, num_frames,
)  # fmt: skip

EpochCallback = Callable[[dict[str, float], Callable[[], dict]], None]


@dataclass(frozen=True)
class OskdftConfig:
    """One OS-KDFT2 trial's settings. Defaults suit the embedded synthetic default on a CPU;
    the paper's values (HuBERT-Base teacher, VoxCeleb1) are given where they differ.

    Searchable: p0, schedule, kd_weight, ft_weight, lr (and any other number here).
    """

    # Curriculum (trainables/speaker/curriculum.py)
    p0: float = 0.1  # target-domain share of the distillation batch at epoch 1, in [0, 1] (paper: 1/epochs)
    schedule: str = "linear"  # linear (paper) | cosine | exponential | step | constant
    # Losses: loss = kd_weight · KD + ft_weight · FT
    kd_weight: float = 1.0  # ≥ 0 (0: fine-tuning only); KD's cosine term is frame-averaged (OS-KDFT's: summed)
    ft_weight: float = 1.0  # ≥ 0
    cos_weight: float = 1.0  # λ of the −log σ(cos) term inside KD (DistilHuBERT and OS-KDFT: 1)
    loss: str = "softmax"  # speaker loss: softmax (OS-KDFT2's code) | aam
    aam_margin: float = 0.2  # radians, AAM only
    aam_scale: float = 30.0  # AAM only
    # Optimisation: one Adam over student, TFT, heads and classifier, constant learning rate (as the paper)
    lr: float = 1e-3  # paper: 5e-5 for the 94 M-parameter base models
    weight_decay: float = 1e-4  # Adam's L2 term (paper: 1e-4)
    epochs: int = 12  # passes over the target-domain training utterances (paper: 100)
    batch_size: int = 16  # utterances per branch; the student sees twice as many (paper: 50)
    crop_seconds: float = 2.0  # training crop, both branches (paper: 3.0)
    dropout: float = 0.0  # student dropout (attention, FFN, projection)
    freeze_extractor: bool = False  # keep the student's copied conv front end fixed (halves CPU time)
    # Architecture
    teacher: SslConfig = field(default_factory=SslConfig)
    student_layers: int = 2
    init_layers: tuple[int, ...] = ()  # teacher layers (0-based) copied into the student; (): 0, 1, …
    copy_positional: bool = True  # also copy positional conv and encoder layer norm (OS-KDFT: no)
    target_layers: tuple[int, ...] = ()  # teacher layers (1-based) the heads predict; (): the thirds (4, 8, 12)
    embedding_dim: int = 192
    tft_bottleneck: int = 0  # 0: width / 12
    tft_attention: int = 0  # 0: width / 8
    tft_noise: bool = True
    # Evaluation
    eval_max_seconds: float = 20.0  # longer utterances are centre-cropped to this before embedding (0: never)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if self.loss not in ("softmax", "aam"):
            raise ValueError(f"unknown speaker loss {self.loss!r}; expected softmax or aam")
        if not 0.0 <= self.p0 <= 1.0:
            raise ValueError(f"p0 must be in [0, 1], got {self.p0}")
        layers = self.teacher.arch()["layers"]
        init = self.init_layers or tuple(range(self.student_layers))
        if len(init) != self.student_layers or not all(0 <= i < layers for i in init):
            raise ValueError(
                f"init_layers {init} must name {self.student_layers} of the teacher's layers 0..{layers - 1}"
            )
        if not all(1 <= k <= layers for k in self.target_layers):
            raise ValueError(f"target_layers {self.target_layers} must lie in 1..{layers}")

    @classmethod
    def from_dict(cls, values: dict) -> OskdftConfig:
        """Take the fields this class knows from a trial config; `teacher` may be a dict."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if isinstance(kept.get("teacher"), dict):
            kept["teacher"] = SslConfig.from_dict(kept["teacher"])
        for key in ("init_layers", "target_layers"):
            if key in kept:
                kept[key] = tuple(int(v) for v in kept[key])
        return cls(**kept)

    def as_dict(self) -> dict:
        return asdict(self)

    def tft(self) -> TftConfig:
        return TftConfig(self.embedding_dim, self.tft_bottleneck, self.tft_attention, self.tft_noise)

    def targets(self) -> tuple[int, ...]:
        return self.target_layers or default_target_layers(self.teacher.arch()["layers"])


def _batches(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Shuffled batches (torch's global generator) of `batch_size`; a last partial batch only if it has ≥ 2
    rows, since the embedding's batch norm needs two."""
    order = rows[torch.randperm(len(rows)).numpy()]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= 2:
            yield batch


@torch.no_grad()
def embed_utterances(
    embed: Callable[[torch.Tensor], torch.Tensor], data: SpeakerData, rows: np.ndarray, device: torch.device,
    max_seconds: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Embeddings [len(rows), dim] (on the CPU) of whole utterances, one at a time (their lengths differ)."""
    limit = int(max_seconds * data.sample_rate)
    out = []
    for row in rows:
        wave = data.utterance(int(row))
        if limit and len(wave) > limit:
            start = (len(wave) - limit) // 2
            wave = wave[start : start + limit]
        out.append(embed(wave.unsqueeze(0).to(device)).float().cpu())
    return torch.cat(out)


def score_trials(
    embed: Callable[[torch.Tensor], torch.Tensor], data: SpeakerData, trials: Trials, device: torch.device,
    max_seconds: float = 0.0,
) -> dict[str, float]:  # fmt: skip
    """EER and minDCF of cosine scores of full-utterance embeddings over a trial list."""
    rows = trials.rows()
    embeddings = embed_utterances(embed, data, rows, device, max_seconds)
    scores = cosine_scores(embeddings, np.searchsorted(rows, trials.enroll), np.searchsorted(rows, trials.test))
    return verification_metrics(scores, trials.labels)


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
    device = device or default_device()
    torch.manual_seed(config.seed)
    teacher_model = teacher if isinstance(teacher, nn.Module) else build_teacher(config.teacher, teacher)
    teacher_model = freeze(teacher_model).to(device)
    model = SpeakerStudent(config.teacher, config.student_layers, config.tft(), config.dropout)
    init_student_from_teacher(model.student, teacher_model, config.init_layers or tuple(range(config.student_layers)),
                              config.copy_positional)  # fmt: skip
    model.to(device)
    targets = config.targets()
    heads = PredictionHeads(config.teacher.arch()["embed_dim"], len(targets)).to(device)
    speaker_loss = SpeakerLoss(config.embedding_dim, len(data.train_speakers), config.loss, config.aam_margin,
                               config.aam_scale).to(device)  # fmt: skip
    if config.freeze_extractor:
        model.student.ssl.feature_extractor.requires_grad_(False)
    trainable = [p for m in (model, heads, speaker_loss) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    train_rows, ood_rows = data.rows("target", "train"), data.rows("ood", "train")
    if len(train_rows) < 2:
        raise DatasetError(f"{data.directory}: fewer than 2 target-domain training utterances")
    labels = torch.as_tensor(data.labels)
    crop = int(config.crop_seconds * data.sample_rate)
    eval_split = "val" if "val" in data.trials else "test"
    teacher_params = count_parameters(teacher_model)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer, whose state follows the parameters' device
        heads.load_state_dict(resume["heads"])
        speaker_loss.load_state_dict(resume["speaker_loss"])
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"])
        if resume.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["cuda_rng"])
        first_epoch = int(resume["epoch"])

    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        share = target_share(config.schedule, config.p0, epoch + 1, config.epochs)
        for module in (model, heads, speaker_loss):
            module.train()
        # Out-of-domain utterances in a fresh order every epoch, taken in turn (OS-KDFT2's shuffle_kd_items).
        ood_order = ood_rows[torch.randperm(len(ood_rows)).numpy()] if len(ood_rows) else ood_rows
        ood_next = 0
        sums = {"kd_loss": 0.0, "ft_loss": 0.0, "train_loss": 0.0, "ft_accuracy": 0.0, "kd_target_fraction": 0.0}
        seen = 0
        for step, rows in enumerate(_batches(train_rows, config.batch_size)):
            n = len(rows)
            # Without an out-of-domain corpus every distillation utterance is a target-domain one.
            from_target = (torch.rand(n) < share).numpy() | (len(ood_rows) == 0)
            kd_rows = train_rows[torch.randint(len(train_rows), (n,)).numpy()]
            if len(ood_rows):
                ood_pick = ood_order[(ood_next + np.arange(n)) % len(ood_order)]
                ood_next += n
                kd_rows = np.where(from_target, kd_rows, ood_pick)
            x_kd, x_ft = data.crops(kd_rows, crop).to(device), data.crops(rows, crop).to(device)
            with torch.no_grad():
                teacher_states = hidden_states(teacher_model, x_kd)
            layers = model.student(torch.cat([x_kd, x_ft]))
            kd = distill_loss(heads(layers[-1][:n]), [teacher_states[k - 1] for k in targets], config.cos_weight)
            ft, accuracy = speaker_loss(model.tft([h[n:] for h in layers]), labels[rows].to(device))
            loss = config.kd_weight * kd + config.ft_weight * ft
            check_finite(loss, epoch + 1, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("kd_loss", kd), ("ft_loss", ft), ("train_loss", loss), ("ft_accuracy", accuracy)):
                sums[key] += value.item() * n
            sums["kd_target_fraction"] += float(from_target.sum())
            seen += n
        train_seconds = time.perf_counter() - started

        model.eval()
        metrics = score_trials(model, data, data.trials[eval_split], device, config.eval_max_seconds)
        metrics.update({k: v / max(seen, 1) for k, v in sums.items()})
        metrics.update(target_share=share, epoch=epoch + 1, lr=config.lr, utterances_per_second=seen / train_seconds,
                       student_params=count_parameters(model), teacher_params=teacher_params)  # fmt: skip
        if epoch + 1 == config.epochs:
            test = metrics if eval_split == "test" else score_trials(model, data, data.trials["test"], device,
                                                                     config.eval_max_seconds)  # fmt: skip
            metrics.update(test_eer=test["eer"], test_min_dcf=test["min_dcf"])

        def make_checkpoint(epoch_done: int = epoch + 1, epoch_metrics: dict = dict(metrics)) -> dict:
            return {
                "student": student_export(model, config, epoch_metrics, teacher_params),
                # state_dict()s hold the live tensors: copy, so the checkpoint stays the epoch's.
                "train_state": copy.deepcopy({
                    "model": model.state_dict(),
                    "heads": heads.state_dict(),
                    "speaker_loss": speaker_loss.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "epoch": epoch_done,
                }),
            }

        on_epoch(metrics, make_checkpoint)
    return metrics


# ---------------------------------------------------------------------------------------------
# The embedded default's teacher


@dataclass(frozen=True)
class TeacherTrainConfig:
    """Settings of `train_ssl_teacher`. Learning rate per Adam step, warm-up then cosine decay."""

    epochs: int = 30
    batch_size: int = 16
    crop_seconds: float = 2.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1  # share of all steps, in [0, 1)
    domains: tuple[str, ...] = ("ood",)  # which corpora it learns from: ood (as a LibriSpeech-pretrained model), target
    masked_weight: float = 1.0  # weight of masked log-mel prediction (0: off)
    speaker_weight: float = 1.0  # weight of AAM speaker classification over the corpora's speakers (0: off)
    mask_prob: float = 0.08  # chance that a frame starts a masked span
    mask_span: int = 5  # frames per masked span (20 ms each)
    n_mels: int = 40  # log-mel bands predicted at masked frames
    aam_margin: float = 0.2
    aam_scale: float = 30.0
    embedding_dim: int = 192
    eval_max_seconds: float = 20.0
    seed: int = 0
    weights: str | None = None  # a pretrained teacher (torchaudio state dict file): used as is, nothing trained

    @classmethod
    def from_dict(cls, values: dict) -> TeacherTrainConfig:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "domains" in kept:
            kept["domains"] = tuple(kept["domains"])
        return cls(**kept)


class _TeacherHeads(nn.Module):
    """Training-only parts of the teacher: mask embedding, log-mel predictor, speaker embedding head."""

    def __init__(self, dim: int, layers: int, config: TeacherTrainConfig):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.1)
        self.reconstruct = nn.Linear(dim, config.n_mels)
        self.layer_logits = nn.Parameter(torch.zeros(layers))  # softmax-normalised layer weights
        self.fc = nn.Linear(2 * dim, config.embedding_dim)
        self.bn = nn.BatchNorm1d(config.embedding_dim)

    def embed(self, layers: list[torch.Tensor]) -> torch.Tensor:
        x = (torch.softmax(self.layer_logits, 0)[:, None, None, None] * torch.stack(layers)).sum(0)  # [B, T, D]
        stats = torch.cat([x.mean(1), (x.var(1, unbiased=False) + 1e-5).sqrt()], dim=1)
        return self.bn(self.fc(stats))


def _span_mask(batch: int, frames: int, prob: float, span: int, device: torch.device) -> torch.Tensor:
    """[batch, frames] bool: every frame starts a masked span of `span` frames with probability `prob`."""
    starts = (torch.rand(batch, frames) < prob).float()
    covered = F.max_pool1d(F.pad(starts[:, None], (span - 1, 0)), span, stride=1)[:, 0]
    return covered.bool().to(device)


def train_ssl_teacher(
    ssl: SslConfig,
    config: TeacherTrainConfig,
    data: SpeakerData,
    on_epoch: Callable[[dict[str, float]], None] = lambda metrics: None,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Train a teacher from scratch; return its torchaudio state dict (on the CPU).

    A stand-in for SSL pretraining that fits a CPU: on the chosen corpora (by default only the
    out-of-domain one, as HuBERT is pretrained on LibriSpeech and never sees VoxCeleb),
    - masked prediction: spans of frames (~35 % of them) have their projected features replaced by a
      learned mask vector, and a linear layer on the last layer predicts those frames' normalised
      log-mel spectrum (L1), so the layers must model the speech around them (Mockingjay-style,
      simpler than HuBERT's k-means targets);
    - speaker classification: AAM-softmax on a mean+std pooling of a softmax-weighted sum of all
      layers (a supervised shortcut to the speaker knowledge a large SSL model picks up; the
      corpus's labels only, never the target domain's unless `domains` includes it).
    on_epoch(metrics) gets the epoch's losses and the teacher's own EER/minDCF on the validation
    trials (the test trials when there are none), from its pooled speaker embedding; after the
    last epoch also test_eer and test_min_dcf.
    """
    device = device or default_device()
    torch.manual_seed(config.seed)
    model = build_ssl(ssl).to(device)
    dim, n_layers = ssl.arch()["embed_dim"], ssl.arch()["layers"]
    heads = _TeacherHeads(dim, n_layers, config).to(device)
    rows = np.flatnonzero(np.isin(data.domains, config.domains) & (data.splits == "train"))
    if len(rows) < 2:
        raise DatasetError(f"{data.directory}: no training utterances in domains {config.domains}")
    speakers = sorted(set(data.speakers[rows].tolist()))
    index = {s: i for i, s in enumerate(speakers)}
    labels = torch.as_tensor([index.get(s, -1) for s in data.speakers])
    speaker_loss = SpeakerLoss(config.embedding_dim, len(speakers), "aam", config.aam_margin, config.aam_scale)
    speaker_loss.to(device)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=FRAME_STRIDE, n_mels=config.n_mels,
                                               center=False).to(device)  # fmt: skip
    parameters = [*model.parameters(), *heads.parameters(), *speaker_loss.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps = sum(1 for _ in range(0, len(rows), config.batch_size)) * config.epochs
    scheduler = warmup_cosine(optimizer, int(config.warmup_fraction * steps), steps)
    crop = int(config.crop_seconds * data.sample_rate)
    eval_split = "val" if "val" in data.trials else "test"

    def embed(waveform: torch.Tensor) -> torch.Tensor:
        return heads.embed(hidden_states(model, waveform))

    metrics: dict[str, float] = {}
    for epoch in range(config.epochs):
        started = time.perf_counter()
        for module in (model, heads, speaker_loss):
            module.train()
        sums, seen = {"masked_loss": 0.0, "speaker_loss": 0.0, "train_loss": 0.0}, 0
        for step, batch in enumerate(_batches(rows, config.batch_size)):
            wave = data.crops(batch, crop).to(device)
            mask = _span_mask(len(batch), num_frames(ssl, crop), config.mask_prob, config.mask_span, device)
            layers = hidden_states(model, wave, mask, heads.mask_embedding)
            log_mel = (mel(wave) + 1e-6).log().transpose(1, 2)  # [B, frames, n_mels]
            log_mel = (log_mel - log_mel.mean(1, keepdim=True)) / (log_mel.std(1, keepdim=True) + 1e-5)
            frames = min(log_mel.shape[1], layers[-1].shape[1])
            m = mask[:, :frames]
            masked = (heads.reconstruct(layers[-1][:, :frames][m]) - log_mel[:, :frames][m]).abs().mean() if m.any() \
                else wave.new_zeros(())  # fmt: skip
            spk, _ = speaker_loss(heads.embed(layers), labels[batch].to(device))
            loss = config.masked_weight * masked + config.speaker_weight * spk
            check_finite(loss, epoch + 1, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in (("masked_loss", masked), ("speaker_loss", spk), ("train_loss", loss)):
                sums[key] += value.item() * len(batch)
            seen += len(batch)
        model.eval()
        heads.eval()
        metrics = score_trials(embed, data, data.trials[eval_split], device, config.eval_max_seconds)
        metrics.update({k: v / max(seen, 1) for k, v in sums.items()})
        metrics.update(epoch=epoch + 1, seconds=time.perf_counter() - started, params=count_parameters(model))
        if epoch + 1 == config.epochs:
            test = metrics if eval_split == "test" else score_trials(embed, data, data.trials["test"], device,
                                                                     config.eval_max_seconds)  # fmt: skip
            metrics.update(test_eer=test["eer"], test_min_dcf=test["min_dcf"])
        on_epoch(metrics)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
