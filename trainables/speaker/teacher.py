"""The networks of OS-KDFT2, built with torchaudio's wav2vec 2.0 / HuBERT / WavLM builders.

- The **teacher** is a torchaudio `Wav2Vec2Model` (HuBERT, wav2vec 2.0 or WavLM), frozen. `size="base"`
  gives the real base models (94 M parameters); `size="reduced"` the same architecture, narrower
  and shallower, so tests and the embedded default run on a CPU. Weights come only from a local
  file; nothing is downloaded.
- The **student** is the same architecture with 2 transformer layers (OS-KDFT's DistilHuBERT-shaped
  student), initialised from the teacher's convolutional feature extractor, feature projection,
  its layers 0 and 1, and optionally its positional convolution and encoder layer norm. In training
  it can drop layers and mask spans of frames (`StudentMasking`), as the reference's HuggingFace
  student does with the hub config of HuBERT base.
- **Prediction heads** map the student's last layer to teacher layers 4, 8, 12 (DistilHuBERT).
- The **target-task feature tuner** (TFT) turns the student's layer outputs into a 192-d speaker
  embedding: a bottleneck per layer, attention across layers, gating across time, mean+std pooling.
- **Speaker losses**: softmax cross-entropy or additive angular margin (AAM) softmax.

Layer numbering follows HuggingFace's `hidden_states`: teacher layer k (1-based) is the output of
transformer layer k, which is torchaudio's `extract_features(...)[0][k - 1]`; layer 0 (the output
of the positional convolution, before any transformer layer) is never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from torchaudio.models import Wav2Vec2Model

FAMILIES = ("hubert", "wav2vec2", "wavlm")
SIZES = ("reduced", "base")
SAMPLE_RATE = 16000
FRAME_STRIDE = 320  # samples per frame of every front end here: 20 ms at 16 kHz, as the base models

# What `size="base"` means: torchaudio's hubert_base / wav2vec2_base / wavlm_base (all post-LN,
# group-norm convolutional front end without bias).
_BASE = dict(layers=12, embed_dim=768, heads=12, ffn_dim=3072, conv_channels=512, conv_depth=7,
             pos_conv_kernel=128, pos_conv_groups=16)  # fmt: skip


@dataclass(frozen=True)
class SslConfig:
    """Architecture of the SSL teacher, and so of the student's copied parts.

    `size="base"` ignores the size fields below and builds the real base model (12 layers, 768 wide,
    12 heads, FFN 3072, 7 conv layers of 512 channels). `size="reduced"` uses them. Widths are
    features per frame; one frame every 320 samples (20 ms at 16 kHz) in both sizes.
    """

    family: str = "hubert"  # hubert | wav2vec2 | wavlm (hubert and wav2vec2 share torchaudio's architecture)
    size: str = "reduced"  # reduced | base
    layers: int = 4  # transformer layers of the teacher, ≥ 2 (the student copies layers 0 and 1)
    embed_dim: int = 96  # transformer width; a multiple of `heads` and of `pos_conv_groups`
    heads: int = 4  # attention heads
    ffn_dim: int = 384  # feed-forward inner width
    conv_channels: int = 32  # channels of every convolutional front-end layer
    conv_depth: int = 5  # front-end conv layers, 2–7; total stride always 320 samples (7 = the base stack)
    pos_conv_kernel: int = 16  # width of the convolutional positional embedding, frames
    pos_conv_groups: int = 4
    wavlm_buckets: int = 320  # WavLM relative-position buckets (the base models' value)
    wavlm_max_distance: int = 800  # WavLM maximum relative distance, frames

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown SSL family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown SSL size {self.size!r}; expected one of {', '.join(SIZES)}")
        arch = self.arch()
        if arch["layers"] < 2:
            raise ValueError("the teacher needs at least 2 transformer layers (the student copies layers 0 and 1)")
        if arch["embed_dim"] % arch["heads"] or arch["embed_dim"] % arch["pos_conv_groups"]:
            raise ValueError(f"embed_dim {arch['embed_dim']} must be a multiple of heads and pos_conv_groups")
        if not 2 <= arch["conv_depth"] <= 7:
            raise ValueError(f"conv_depth must be in 2..7, got {arch['conv_depth']}")

    @classmethod
    def from_dict(cls, values: dict) -> SslConfig:
        return cls(**values)

    def arch(self) -> dict[str, int]:
        """The size fields that are in effect (the base values for `size="base"`)."""
        if self.size == "base":
            return dict(_BASE)
        return {k: getattr(self, k) for k in _BASE}

    def as_dict(self) -> dict:
        return asdict(self)


def conv_stack(channels: int, depth: int) -> list[tuple[int, int, int]]:
    """(channels, kernel, stride) of each front-end layer, 320 samples of total stride.

    Depth 7 is the base models' stack. Shallower stacks keep the first layer (kernel 10, stride 5)
    and spread the remaining factor 64 = 2⁶ over the other layers, so every size gives 50 frames/s
    and the teacher's and student's frames line up with the base models'.
    """
    if depth == 7:
        return [(channels, 10, 5)] + [(channels, 3, 2)] * 4 + [(channels, 2, 2)] * 2
    rest = depth - 1
    exponents = [6 // rest + (1 if i < 6 % rest else 0) for i in range(rest)]
    return [(channels, 10, 5)] + [(channels, 3 if e == 1 else 2**e, 2**e) for e in exponents]


def num_frames(config: SslConfig, samples: int) -> int:
    """Frames the front end of `config` makes of `samples` samples (no padding: each conv trims its kernel)."""
    arch = config.arch()
    for _, kernel, stride in conv_stack(arch["conv_channels"], arch["conv_depth"]):
        samples = (samples - kernel) // stride + 1
    return samples


def build_ssl(config: SslConfig, num_layers: int | None = None, dropout: float = 0.0) -> Wav2Vec2Model:
    """A randomly initialised torchaudio model of `config`'s architecture, with `num_layers` layers.

    The full-depth base model comes from torchaudio's own `*_base` builder; everything else from
    `wav2vec2_model` / `wavlm_model` with the same settings. torchaudio's own layer drop stays off:
    it is not applied by `get_intermediate_outputs`, so `hidden_states` applies the student's.
    """
    drop = dict(encoder_projection_dropout=dropout, encoder_attention_dropout=dropout,
                encoder_ff_interm_dropout=dropout, encoder_dropout=dropout, encoder_layer_drop=0.0)  # fmt: skip
    arch = config.arch()
    layers = arch["layers"] if num_layers is None else num_layers
    if config.size == "base" and layers == _BASE["layers"]:
        builder = {"hubert": torchaudio.models.hubert_base, "wav2vec2": torchaudio.models.wav2vec2_base,
                   "wavlm": torchaudio.models.wavlm_base}[config.family]  # fmt: skip
        return builder(**drop)
    common = dict(
        extractor_mode="group_norm",
        extractor_conv_layer_config=conv_stack(arch["conv_channels"], arch["conv_depth"]),
        extractor_conv_bias=False,
        encoder_embed_dim=arch["embed_dim"],
        encoder_pos_conv_kernel=arch["pos_conv_kernel"],
        encoder_pos_conv_groups=arch["pos_conv_groups"],
        encoder_num_layers=layers,
        encoder_num_heads=arch["heads"],
        encoder_ff_interm_features=arch["ffn_dim"],
        encoder_layer_norm_first=False,
        aux_num_out=None,
        **drop,
    )
    if config.family == "wavlm":
        return torchaudio.models.wavlm_model(
            encoder_num_buckets=config.wavlm_buckets, encoder_max_distance=config.wavlm_max_distance, **common
        )
    return torchaudio.models.wav2vec2_model(**common)


def load_ssl_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Teacher weights from a local file, in torchaudio's parameter names.

    Accepted: a torchaudio state dict saved with `torch.save(model.state_dict(), path)` (e.g. of a
    `torchaudio.pipelines.HUBERT_BASE` model fetched elsewhere), a dict holding it under
    "state_dict", or a HuggingFace checkpoint *directory* (config.json + weights), converted with
    torchaudio's `import_huggingface_model`, which needs the `transformers` package.
    """
    path = Path(path)
    if path.is_dir():
        try:
            import transformers
        except ImportError as error:
            raise ImportError(
                f"{path} is a HuggingFace checkpoint directory; converting it needs the `transformers` package, "
                "which is not installed. Convert it on a machine that has it: "
                "torch.save(torchaudio.models.wav2vec2.utils.import_huggingface_model("
                "transformers.AutoModel.from_pretrained(DIR)).state_dict(), FILE), then pass FILE."
            ) from error
        from torchaudio.models.wav2vec2.utils import import_huggingface_model

        hf_model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        return import_huggingface_model(hf_model).state_dict()
    if not path.is_file():
        raise FileNotFoundError(f"no teacher weights at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if any(k.startswith("encoder.layers.") for k in state):
        raise ValueError(f"{path} holds HuggingFace parameter names; pass the checkpoint directory instead "
                         "(converted with import_huggingface_model, which needs `transformers`)")  # fmt: skip
    return state


def build_teacher(config: SslConfig, state_dict: dict[str, torch.Tensor] | None = None) -> Wav2Vec2Model:
    """The frozen teacher: `config`'s model with `state_dict` loaded strictly, in eval mode."""
    model = build_ssl(config)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:
            raise ValueError(f"the teacher weights do not fit {config}: {str(error)[:500]}") from error
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hidden_states(
    model: Wav2Vec2Model,
    waveform: torch.Tensor,
    mask: torch.Tensor | None = None,
    mask_embedding: torch.Tensor | None = None,
    layer_drop: float = 0.0,
) -> list[torch.Tensor]:
    """Outputs of every transformer layer, each [batch, frames, embed_dim], for waveforms [batch, samples].

    The same computation as torchaudio's `extract_features`, with two additions for training:
    - frames where `mask` [batch, frames] is True have their projected features replaced by
      `mask_embedding` before the transformer (as in wav2vec 2.0 / HuBERT masking);
    - in training mode each layer is skipped with probability `layer_drop` (for the whole batch, as
      HuggingFace's LayerDrop), its output then being its input. A WavLM layer that computes the
      relative-position bias the others reuse is never skipped.
    """
    features, _ = model.feature_extractor(waveform, None)
    x = model.encoder.feature_projection(features)
    if mask is not None:
        x = torch.where(mask.unsqueeze(-1), mask_embedding.to(x.dtype), x)
    transformer = model.encoder.transformer
    if not (layer_drop > 0 and model.training):
        return transformer.get_intermediate_outputs(x)
    x, bias, outputs = transformer._preprocess(x), None, []
    for layer in transformer.layers:
        makes_bias = getattr(layer.attention, "rel_attn_embed", None) is not None
        # A host-side draw from torch's CPU generator: a Python decision, no tensor meets the data.
        if makes_bias or torch.rand(()).item() >= layer_drop:
            x, bias = layer(x, None, position_bias=bias)
        outputs.append(x)
    return outputs


class SslStudent(nn.Module):
    """The teacher's architecture cut to `layers` transformer layers: waveform → their outputs."""

    def __init__(self, ssl: SslConfig, layers: int = 2, dropout: float = 0.0, layer_drop: float = 0.0):
        super().__init__()
        self.ssl = build_ssl(ssl, num_layers=layers, dropout=dropout)
        self.layer_drop = layer_drop

    def forward(self, waveform: torch.Tensor, masking: StudentMasking | None = None) -> list[torch.Tensor]:
        """masking: in training, spans of frames replaced by its learned vector (none in eval mode)."""
        if masking is None or not self.training or masking.prob == 0:
            return hidden_states(self.ssl, waveform, layer_drop=self.layer_drop)
        frames = num_frames_of(self.ssl, waveform.shape[-1])
        mask = masking.mask(waveform.shape[0], frames, waveform.device)
        return hidden_states(self.ssl, waveform, mask, masking.embedding, self.layer_drop)


class StudentMasking(nn.Module):
    """Training-time time masking of the student's projected features (HuggingFace's `mask_time_*`).

    Each utterance gets max(min_spans, ⌊prob · frames / span + u⌋) spans (u ~ U(0, 1), one draw per
    batch) of `span` frames at distinct random starts; masked frames take a learned vector, initialised
    U(0, 1) as HuggingFace's `masked_spec_embed`. HuBERT base's hub config: prob 0.05, span 10, min 2.
    A training-only part (like the prediction heads): the exported student does not hold it.
    """

    def __init__(self, dim: int, prob: float = 0.0, span: int = 10, min_spans: int = 2):
        super().__init__()
        self.prob, self.span, self.min_spans = prob, span, min_spans
        self.embedding = nn.Parameter(torch.rand(dim))

    def mask(self, batch: int, frames: int, device: torch.device) -> torch.Tensor:
        """[batch, frames] bool on `device`: True where a frame is masked."""
        starts = max(frames - self.span + 1, 1)
        count = min(starts, max(self.min_spans, int(self.prob * frames / self.span + torch.rand(()).item())))
        # Distinct random starts per utterance: the top `count` of uniform scores, drawn on the data's device.
        chosen = torch.rand(batch, starts, device=device).topk(count, dim=1).indices
        begin = torch.zeros(batch, frames, device=device).scatter_(1, chosen, 1.0)
        covered = F.max_pool1d(F.pad(begin[:, None], (self.span - 1, 0)), self.span, stride=1)[:, 0]
        return covered > 0


def num_frames_of(model: Wav2Vec2Model, samples: int) -> int:
    """Frames a torchaudio model's convolutional front end makes of `samples` samples."""
    for layer in model.feature_extractor.conv_layers:
        samples = (samples - layer.kernel_size) // layer.stride + 1
    return samples


def init_student_from_teacher(
    student: SslStudent, teacher: Wav2Vec2Model, teacher_layers: Sequence[int] = (0, 1), copy_positional: bool = True
) -> None:
    """Copy the teacher's front end, feature projection and the given layers (0-based) into the student.

    copy_positional: also copy the positional convolution and the encoder layer norm. OS-KDFT's
    released student leaves both at random init (the paper recipe, spaces/oskdft2_vox1.yaml, does
    too); DistilHuBERT copies the positional convolution. The embedded default copies both: in
    these post-LN models the encoder layer norm sits between the positional convolution and layer 0,
    so with both copied the student's layers start out computing exactly the teacher's layers 0 and
    1, instead of seeing differently scaled inputs.
    """
    target, source = student.ssl, teacher
    layers = len(target.encoder.transformer.layers)
    if len(teacher_layers) != layers:
        raise ValueError(f"{len(teacher_layers)} teacher layers for a {layers}-layer student")
    target.feature_extractor.load_state_dict(source.feature_extractor.state_dict())
    target.encoder.feature_projection.load_state_dict(source.encoder.feature_projection.state_dict())
    if copy_positional:
        student_encoder, teacher_encoder = target.encoder.transformer, source.encoder.transformer
        student_encoder.pos_conv_embed.load_state_dict(teacher_encoder.pos_conv_embed.state_dict())
        student_encoder.layer_norm.load_state_dict(teacher_encoder.layer_norm.state_dict())
    source_layers = source.encoder.transformer.layers
    for i, (mine, theirs) in enumerate(zip(target.encoder.transformer.layers, teacher_layers)):
        state = dict(source_layers[theirs].state_dict())
        if i == 0 and theirs != 0:
            # WavLM: only layer 0 holds the relative-position bias table, which every layer uses;
            # a student whose first layer comes from a deeper teacher layer takes the table from layer 0.
            state.update({k: v for k, v in source_layers[0].state_dict().items() if "rel_attn_embed" in k})
        state = {k: v for k, v in state.items() if i == 0 or "rel_attn_embed" not in k}
        mine.load_state_dict(state)


def default_target_layers(teacher_layers: int) -> tuple[int, ...]:
    """Teacher layers (1-based) the prediction heads target: the thirds of its depth.

    For 12 layers that is DistilHuBERT's (4, 8, 12); for a 4-layer reduced teacher (2, 3, 4).
    """
    return tuple(sorted({math.ceil(teacher_layers * k / 3) for k in (1, 2, 3)}))


class PredictionHeads(nn.Module):
    """One head per teacher layer, each Linear–GELU–Linear on the student's last layer (DistilHuBERT)."""

    def __init__(self, dim: int, n_heads: int, teacher_dim: int | None = None):
        super().__init__()
        teacher_dim = teacher_dim or dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, teacher_dim)) for _ in range(n_heads)
        )

    def forward(self, last_layer: torch.Tensor) -> list[torch.Tensor]:
        return [head(last_layer) for head in self.heads]


COS_REDUCTIONS = ("mean", "sum")


def distill_loss(
    predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], cos_weight: float = 1.0,
    cos_reduction: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """DistilHuBERT's loss: Σ_heads [L1 − cos_weight · log σ(cos)], averaged over the batch.

    Per head and utterance the L1 term is averaged over frames and features. The cosine term is
    - `cos_reduction="mean"`: averaged over frames, as s3prl's DistilHuBERT does; the loss then does
      not depend on the crop length;
    - `"sum"`: summed over frames, as OS-KDFT's and OS-KDFT2's released code does
      (`cos_loss.sum(dim=2)`). That is the "mean" loss with cos_weight multiplied by the frame count
      (149 at 3 s), so the cosine term outweighs the L1 term and the speaker loss by that factor;
      its floor is ≈ 0.313 · frames per head. Raising kd_weight does not reproduce it (that scales
      the L1 term too): use "sum" for the reference's balance.
    """
    if cos_reduction not in COS_REDUCTIONS:
        raise ValueError(f"unknown cos_reduction {cos_reduction!r}; expected mean or sum")
    total = predictions[0].new_zeros(predictions[0].shape[0])
    for prediction, target in zip(predictions, targets, strict=True):
        frames = min(prediction.shape[1], target.shape[1])
        prediction, target = prediction[:, :frames], target[:, :frames]
        l1 = (prediction - target).abs().mean(dim=(1, 2))
        log_sigmoid = F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1))
        cosine = log_sigmoid.sum(dim=1) if cos_reduction == "sum" else log_sigmoid.mean(dim=1)
        total = total + l1 - cos_weight * cosine
    return total.mean()


class _NoisyBottleneck(nn.Module):
    """Linear down, GELU, training-time Gaussian noise, Linear up; optionally added to its input.

    The noise (per utterance, std drawn from U(0.1, 0.5) times the mean |activation|) follows
    OS-KDFT's adapter and OS-KDFT2's DistTuner. The reference's DistTuner returns up(gelu(down(x)))
    with no residual (`residual=False`); the residual (the embedded default) starts the tuner near
    the identity of the shared student features.
    """

    def __init__(self, dim: int, bottleneck: int, noise: bool, residual: bool = True):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.noise = noise
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.gelu(self.down(x))
        if self.training and self.noise:
            scale = z.detach().abs().mean(dim=(1, 2), keepdim=True)
            std = torch.empty_like(scale).uniform_(0.1, 0.5) * scale
            z = z + torch.randn_like(z) * std
        return x + self.up(z) if self.residual else self.up(z)


@dataclass(frozen=True)
class TftConfig:
    """Sizes of the target-task feature tuner; 0 means the notes' proportion of the student's width."""

    embedding_dim: int = 192  # speaker embedding size
    bottleneck: int = 0  # per-layer tuner bottleneck; 0: width / 12 (64 for 768)
    attention_dim: int = 0  # attention hidden channels; 0: width / 8 (96 for 768)
    noise: bool = True  # training-time Gaussian noise in the tuners
    residual: bool = True  # tuner output added to its input (OS-KDFT2's DistTuner: no)


class TargetTaskFeatureTuner(nn.Module):
    """Student layer outputs → speaker embedding [batch, embedding_dim] (OS-KDFT2's TFT, notes §1c).

    1. each layer's output passes its own noisy bottleneck tuner (with or without a residual);
    2. each tuned layer gives attention logits per channel and frame (1×1 conv, ReLU, BN, tanh, 1×1 conv);
    3. a softmax over layers of those logits weights the sum of the tuned layers (layer attention);
    4. a sigmoid of the logits summed over layers gates every channel and frame (time attention);
    5. mean and standard deviation over time, a linear layer to the embedding, batch norm.
    """

    def __init__(self, dim: int, n_layers: int, config: TftConfig = TftConfig()):
        super().__init__()
        bottleneck = config.bottleneck or max(4, dim // 12)
        attention = config.attention_dim or max(4, dim // 8)
        self.tuners = nn.ModuleList(
            _NoisyBottleneck(dim, bottleneck, config.noise, config.residual) for _ in range(n_layers)
        )
        self.attention = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, attention, 1), nn.ReLU(), nn.BatchNorm1d(attention), nn.Tanh(),
                          nn.Conv1d(attention, dim, 1))  # fmt: skip
            for _ in range(n_layers)
        )
        self.fc = nn.Linear(2 * dim, config.embedding_dim)
        self.bn = nn.BatchNorm1d(config.embedding_dim)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        tuned = [tuner(h).transpose(1, 2) for tuner, h in zip(self.tuners, layers, strict=True)]  # [B, D, T] each
        logits = torch.stack([att(h) for att, h in zip(self.attention, tuned)], dim=1)  # [B, L, D, T]
        x = (torch.softmax(logits, dim=1) * torch.stack(tuned, dim=1)).sum(dim=1)
        x = x * torch.sigmoid(logits.sum(dim=1))
        stats = torch.cat([x.mean(dim=2), (x.var(dim=2, unbiased=False) + 1e-5).sqrt()], dim=1)
        return self.bn(self.fc(stats))


class SpeakerStudent(nn.Module):
    """What ships: the SSL student and its TFT, waveform [batch, samples] at 16 kHz → embedding."""

    def __init__(
        self, ssl: SslConfig, layers: int = 2, tft: TftConfig = TftConfig(), dropout: float = 0.0,
        layer_drop: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.student = SslStudent(ssl, layers, dropout, layer_drop)
        self.tft = TargetTaskFeatureTuner(ssl.arch()["embed_dim"], layers, tft)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.tft(self.student(waveform))


class SpeakerLoss(nn.Module):
    """Speaker classification over the training speakers: softmax CE, or AAM-softmax.

    AAM (ArcFace): logits = scale · cos(θ_y + margin) for the true speaker and scale · cos θ_j
    for the others, θ the angle between embedding and class weight. Where θ_y + margin would pass
    π the target logit falls back to cos θ_y − margin · sin(margin), which keeps it monotonic.

    class_weights [n_classes]: the cross-entropy weights each utterance by its speaker's weight
    (PyTorch's weighted mean, divided by the batch's summed weights), as OS-KDFT2's CCE with
    weight = N / N_speaker does; None: unweighted.
    """

    def __init__(
        self, embedding_dim: int, n_classes: int, kind: str = "softmax", margin: float = 0.2, scale: float = 30.0,
        class_weights: torch.Tensor | None = None,
    ):  # fmt: skip
        super().__init__()
        if kind not in ("softmax", "aam"):
            raise ValueError(f"unknown speaker loss {kind!r}; expected softmax or aam")
        self.kind, self.margin, self.scale = kind, margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(n_classes)) if kind == "softmax" else None
        # A buffer, so it follows the module to the data's device; not saved (it is derived from the data).
        self.register_buffer("class_weights", class_weights, persistent=False)

    def logits(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "softmax":
            return F.linear(embedding, self.weight, self.bias)
        cosine = F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        if labels is None:
            return self.scale * cosine
        sine = (1.0 - cosine**2).sqrt()
        with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        with_margin = torch.where(cosine > math.cos(math.pi - self.margin), with_margin,
                                  cosine - self.margin * math.sin(self.margin))  # fmt: skip
        one_hot = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(one_hot, with_margin, cosine)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy of the margin-free logits) for embeddings [batch, dim] and labels [batch]."""
        loss = F.cross_entropy(self.logits(embedding, labels), labels, weight=self.class_weights)
        with torch.no_grad():
            accuracy = (self.logits(embedding).argmax(dim=1) == labels).float().mean()
        return loss, accuracy
