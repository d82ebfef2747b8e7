"""The frozen SSL teacher of OS-KDFT2: torchaudio's wav2vec 2.0 / HuBERT / WavLM, its config and weights.

The **teacher** is a torchaudio `Wav2Vec2Model` (HuBERT, wav2vec 2.0 or WavLM), frozen. `size="base"`
gives the real base models (94 M parameters); `size="reduced"` the same architecture, narrower
and shallower, so tests and the embedded default run on a CPU. Weights come only from a local
file; nothing is downloaded.

Layer numbering follows HuggingFace's `hidden_states`: teacher layer k (1-based) is the output of
transformer layer k, which is torchaudio's `extract_features(...)[0][k - 1]`; layer 0 (the output
of the positional convolution, before any transformer layer) is never used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio
from torch import nn
from torchaudio.models import Wav2Vec2Model

from trainables.settings import Settings, setting

FAMILIES = ("hubert", "wav2vec2", "wavlm")
SIZES = ("reduced", "base")
SAMPLE_RATE = 16000
FRAME_STRIDE = 320  # samples per frame of every front end here: 20 ms at 16 kHz, as the base models

# What `size="base"` means: torchaudio's hubert_base / wav2vec2_base / wavlm_base (all post-LN,
# group-norm convolutional front end without bias).
_BASE = dict(layers=12, embed_dim=768, heads=12, ffn_dim=3072, conv_channels=512, conv_depth=7,
             pos_conv_kernel=128, pos_conv_groups=16)  # fmt: skip


@dataclass(frozen=True)
class SslConfig(Settings):
    """Architecture of the SSL teacher, and so of the student's copied parts.

    `size="base"` ignores the size fields below and builds the real base model (12 layers, 768 wide,
    12 heads, FFN 3072, 7 conv layers of 512 channels). `size="reduced"` uses them. Widths are
    features per frame; one frame every 320 samples (20 ms at 16 kHz) in both sizes.
    """

    family: str = setting("hubert", choices=FAMILIES)  # hubert | wav2vec2 | wavlm (hubert and wav2vec2 share
    # torchaudio's architecture)
    size: str = setting("reduced", choices=SIZES)  # reduced | base
    layers: int = setting(4, low=2)  # transformer layers of the teacher (the student copies layers 0 and 1)
    embed_dim: int = setting(96, low=1)  # transformer width; a multiple of `heads` and of `pos_conv_groups`
    heads: int = setting(4, low=1)  # attention heads
    ffn_dim: int = setting(384, low=1)  # feed-forward inner width
    conv_channels: int = setting(32, low=1)  # channels of every convolutional front-end layer
    conv_depth: int = setting(5, low=2, high=7)  # front-end conv layers; total stride always 320 samples (7 = the base
    # stack; conv_stack makes no other)
    pos_conv_kernel: int = setting(16, low=1)  # width of the convolutional positional embedding, frames
    pos_conv_groups: int = setting(4, low=1)
    wavlm_buckets: int = setting(320, low=1)  # WavLM relative-position buckets (the base models' value)
    wavlm_max_distance: int = setting(800, low=1)  # WavLM maximum relative distance, frames

    def __post_init__(self) -> None:
        super().__post_init__()  # the size fields' own rules; size="base" replaces them by values that keep them
        arch = self.arch()
        if arch["embed_dim"] % arch["heads"] or arch["embed_dim"] % arch["pos_conv_groups"]:
            raise ValueError(f"embed_dim {arch['embed_dim']} must be a multiple of heads and pos_conv_groups")

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


def num_frames_of(model: Wav2Vec2Model, samples: int) -> int:
    """Frames a torchaudio model's convolutional front end makes of `samples` samples."""
    for layer in model.feature_extractor.conv_layers:
        samples = (samples - layer.kernel_size) // layer.stride + 1
    return samples
