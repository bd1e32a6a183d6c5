"""The landslide CNN of Prakash, Manconi & Loew (2021), in plain torch.

Layout (paper widths in brackets)::

    pre  ──stem 7x7/2 [24]─┐
    post ──stem 7x7/2 [24]─┼─concat [64] (1x1 fuse if the sum differs) ── 1/2
    terrain ─stem 7x7/2 [16]┘
        maxpool 3x3/2 ── 1/4 ── stage1 3xBasicBlock [64]  ── 1/4
                                 stage2 4xBasicBlock [128] ── 1/8
                                 stage3 6xBasicBlock [256] ── 1/16
                                 stage4 3xBasicBlock [256] ── 1/32 (bottleneck)
    decoder (bilinear x2, concat skip, dropout, residual block):
        1/16 [256] + stage3 ─> side logits 1/16
        1/8  [128] + stage2 ─> side logits 1/8
        1/4  [64]  + stage1 ─> side logits 1/4
        1/2  [32]  + stems  ─> side logits 1/2
        1/1  [16]  + full-resolution skip stream (two 3x3 convs on the raw inputs) ─> logits

Why this shape: separate stems let each input (pre, post, terrain) learn its own low-level
filters before they are mixed; the ResNet-34 encoder gives the paper's capacity; the maxpool after
the stems puts the decoder's side outputs at 1/16, 1/8, 1/4 and 1/2 exactly as in the paper while
the last step returns to full resolution, where the full-resolution skip stream restores the sharp
scar outlines that a 1/2-resolution stem alone would blur.

Inputs are a dict of ``(N, C_stream, H, W)`` tensors, already normalised. ``H`` and ``W`` must be
multiples of ``model.size_multiple`` (32 with four encoder stages): other sizes are refused with a
``ValueError`` rather than silently padded, because padding would change what a pixel near the
edge sees and the inference code controls its windows anyway.

Speed on CPU: ``model.to(memory_format=torch.channels_last)`` runs ~1.5x faster with oneDNN
(inputs may stay contiguous; the first conv converts them). No torch.compile is needed.

Side outputs are returned in train *and* eval mode when ``deep_supervision`` is on (they cost four
1x1 convolutions), so a validation loss can use the same deep-supervision loss as training;
inference simply ignores them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DEFAULT_STEM_WIDTHS, PAPER_WINDOW, ModelConfig

__all__ = [
    "ModelConfig",
    "LandslideNet",
    "BasicBlock",
    "count_parameters",
    "flops_per_pixel",
    "receptive_field_margin",
    "describe",
    "DEFAULT_STEM_WIDTHS",
]


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock (two 3x3 convs + identity/projection shortcut), used in encoder and decoder."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class DecoderBlock(nn.Module):
    """Upsample x2 (bilinear), concatenate the skip, dropout, one residual block."""

    def __init__(self, cin: int, cskip: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.block = BasicBlock(cin + cskip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.drop(torch.cat([x, skip], dim=1)))


def _prior_logit(prior: float | None) -> float:
    return 0.0 if prior is None else math.log(prior / (1.0 - prior))


# the network
class LandslideNet(nn.Module):
    """Multi-stream ResNet-34 U-Net with full-resolution skip stream and deep supervision.

    ``forward(inputs)`` takes ``{stream: (N, C, H, W)}`` (extra keys are ignored, missing ones are an
    error) and returns ``{"logits": (N, 1, H, W), "side": [logits at 1/16, 1/8, 1/4, 1/2]}``
    (with four encoder stages; ``side`` is ``[]`` when ``deep_supervision`` is off).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        stem_w = config.resolved_stem_widths()
        enc_w = config.encoder_widths
        dec_w = config.resolved_decoder_widths()
        full_w = config.resolved_fullres_width()
        self.streams = list(config.streams)
        self.size_multiple = config.size_multiple

        # per-stream stems at 1/2, concatenated, then adjusted to the encoder width
        self.stems = nn.ModuleDict({s: conv_bn_relu(c, stem_w[s], 7, stride=2) for s, c in config.streams.items()})
        cat_w = sum(stem_w.values())
        self.fuse = conv_bn_relu(cat_w, enc_w[0], 1) if cat_w != enc_w[0] else nn.Identity()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

        # ResNet encoder: stage 0 at 1/4 (stride 1 after the maxpool), then /2 per stage
        stages = []
        cin = enc_w[0]
        for i, (n, w) in enumerate(zip(config.encoder_blocks, enc_w)):
            blocks = [BasicBlock(cin, w, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.encoder = nn.ModuleList(stages)
        self.bottleneck_drop = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()

        # full-resolution skip stream on the raw concatenated inputs
        in_total = sum(config.streams.values())
        self.fullres = nn.Sequential(conv_bn_relu(in_total, full_w, 3), conv_bn_relu(full_w, full_w, 3))

        # decoder: skips are encoder stages (deepest-but-one first), then the stem, then full-res
        skips = [enc_w[i] for i in reversed(range(len(enc_w) - 1))] + [enc_w[0], full_w]
        dec = []
        cin = enc_w[-1]
        for cskip, cout in zip(skips, dec_w):
            dec.append(DecoderBlock(cin, cskip, cout, config.dropout))
            cin = cout
        self.decoder = nn.ModuleList(dec)
        self.head = nn.Conv2d(dec_w[-1], 1, 1)
        self.side_heads = nn.ModuleList([nn.Conv2d(w, 1, 1) for w in dec_w[:-1]] if config.deep_supervision else [])
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming for convs; zero last BN of residual branches (each block starts as its shortcut,
        which steadies early training); output biases at the rare-positive prior."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        bias = _prior_logit(self.config.prior)
        for h in [self.head, *self.side_heads]:
            nn.init.normal_(h.weight, std=0.01)  # small: start every pixel near the prior
            nn.init.constant_(h.bias, bias)

    def _check_inputs(self, inputs: dict[str, Tensor]) -> tuple[int, int]:
        missing = [s for s in self.streams if s not in inputs]
        if missing:
            raise KeyError(f"model inputs lack streams {missing}; the model was built for {self.streams}")
        shape = None
        for s, c in self.config.streams.items():
            x = inputs[s]
            if x.ndim != 4 or x.shape[1] != c:
                raise ValueError(f"stream {s!r}: expected (N, {c}, H, W), got {tuple(x.shape)}")
            if shape is None:
                shape = (x.shape[0], x.shape[2], x.shape[3])
            elif (x.shape[0], x.shape[2], x.shape[3]) != shape:
                raise ValueError(f"stream {s!r} has shape {tuple(x.shape)}; all streams need the same N, H, W {shape}")
        assert shape is not None
        _, h, w = shape
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"input {h}x{w} is not a multiple of {m}: pad or crop windows to a multiple of {m}")
        return h, w

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor | list[Tensor]]:
        self._check_inputs(inputs)
        raw = [inputs[s] for s in self.streams]
        half = self.fuse(torch.cat([self.stems[s](x) for s, x in zip(self.streams, raw)], dim=1))
        full = self.fullres(torch.cat(raw, dim=1) if len(raw) > 1 else raw[0])

        feats = []
        x = self.pool(half)
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        x = self.bottleneck_drop(feats[-1])

        skips = feats[-2::-1] + [half, full]
        side = []
        for i, (block, skip) in enumerate(zip(self.decoder, skips)):
            x = block(x, skip)
            if i < len(self.side_heads):
                side.append(self.side_heads[i](x))
        return {"logits": self.head(x), "side": side}


# measurement helpers
def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dummy_inputs(
    config: ModelConfig, size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    return {s: torch.zeros(1, c, size, size, device=device, dtype=dtype) for s, c in config.streams.items()}


def flops_per_pixel(model: nn.Module, config: ModelConfig, size: int = PAPER_WINDOW) -> float:
    """Forward FLOPs (2 x multiply-accumulates) per output pixel, counted with forward hooks.

    Counts Conv2d, ConvTranspose2d and Linear (biases, BN, activations and interpolation are
    ignored, as FLOP counters usually do); equals ``torch.utils.flop_counter.FlopCounterMode``
    on this model. Measured on one ``size x size`` tile in eval mode.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def convt_hook(m: nn.ConvTranspose2d, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * inp[0].numel() * (m.out_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(convt_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    p = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(_dummy_inputs(config, size, p.device, p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total / float(size * size)


def receptive_field_margin(model_or_config: nn.Module | ModelConfig) -> int:
    """Pixels of input context each side of an output pixel that can influence it (theoretical).

    Tracked analytically through the deepest path (stem, maxpool, every encoder conv, every
    decoder upsample and conv): a feature pixel ``i`` at stride ``j`` depends on input pixels
    ``[j*i - left, j*i + right]``. A conv (kernel k, padding p, stride s) adds ``j*p`` left and
    ``j*(k-1-p)`` right; a bilinear x2 upsample from stride ``J`` adds at most ``J`` left and
    ``J/2`` right. The bound is tight: output pixels at one phase of the coarsest level's cycle
    (every ``size_multiple`` pixels) depend on inputs exactly this far away on one side; other
    pixels reach up to ``size_multiple`` pixels less. So in eval mode an input change farther
    than this can never alter the pixel (tested), and a nearer one may.

    It is the *theoretical* field (573 px for the paper's config: ResNet-34's 449 plus the
    decoder); the effective field of a trained net is much narrower. Blended sliding windows need
    only the window overlap as halo, but a block-wise ``map_overlap`` that must equal whole-image
    inference bit for bit needs all of it.
    """
    cfg = model_or_config.config if isinstance(model_or_config, LandslideNet) else model_or_config
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"expected a LandslideNet or ModelConfig, got {type(model_or_config).__name__}")
    j, left, right = 1.0, 0.0, 0.0

    def conv(k: int, s: int = 1) -> None:
        nonlocal j, left, right
        p = k // 2
        left += j * p
        right += j * (k - 1 - p)
        j *= s

    conv(7, 2)  # stems
    conv(3, 2)  # maxpool
    for i, n in enumerate(cfg.encoder_blocks):
        conv(3, 1 if i == 0 else 2)
        for _ in range(2 * n - 1):
            conv(3)
    # the full-resolution stream (two 3x3) and the stem skip are shallower than the deep path,
    # so the union of receptive fields is the deep path's
    for _ in cfg.resolved_decoder_widths():
        left += j
        right += j / 2
        j /= 2
        conv(3)
        conv(3)
    return int(math.ceil(max(left, right)))


def describe(config: ModelConfig, size: int = PAPER_WINDOW) -> str:
    """One human-readable paragraph: streams, widths, parameters, FLOPs/pixel, receptive field."""
    model = LandslideNet(config)
    stems = config.resolved_stem_widths()
    lines = [
        "LandslideNet (Prakash et al. 2021: multi-stream ResNet U-Net, deep supervision)",
        "  streams: " + ", ".join(f"{s}[{c} ch -> stem {stems[s]}]" for s, c in config.streams.items()),
        f"  encoder: blocks {list(config.encoder_blocks)}, widths {list(config.encoder_widths)}",
        f"  decoder: widths {list(config.resolved_decoder_widths())}, full-res stream "
        f"{config.resolved_fullres_width()}, dropout {config.dropout}, "
        f"deep supervision {'on' if config.deep_supervision else 'off'}",
        f"  parameters: {count_parameters(model):,}",
        f"  forward FLOPs/pixel at {size}x{size}: {flops_per_pixel(model, config, size):,.0f}",
        f"  receptive-field margin: {receptive_field_margin(config)} px each side; "
        f"input size multiple: {config.size_multiple}",
    ]
    return "\n".join(lines)
