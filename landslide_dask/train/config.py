"""What a training run is: its configuration and the defaults of training windows, defined once.

Light on purpose (no torch, no xarray): the CLI builds its options from these fields and their
defaults, and job specs and benchmarks read them, without importing the training stack. Functions
whose parameters mean a field of :class:`TrainConfig` take its default from there
(``TrainConfig.window``), never a copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["DEFAULT_STEM_WIDTHS", "OTHER_STEM_WIDTH", "ModelConfig", "PAPER_WINDOW", "INPUT_MULTIPLE", "TrainConfig"]

#: The paper's training window (px): the default of training windows and of FLOP counts.
PAPER_WINDOW = 224


@dataclass
class TrainConfig:
    """One training run. ``model`` holds ModelConfig overrides (e.g. widths) as plain values."""

    cubes: list[str]
    out: str
    streams: tuple[str, ...] = ("pre", "post", "terrain")
    # the imagery bands the model sees, by name (None: every band of the first cube); cubes from
    # other sensors serve as long as they hold these
    bands: tuple[str, ...] | None = None
    # pre-event stream dropout (probability per window of losing it whole, and again of losing it
    # beyond a random edge): a model trained with it maps pixels whose pre-event image is missing
    # from post-event imagery and terrain; one trained without leaves them unmapped, and says so
    pre_dropout: float = 0.0
    # dropout of other whole streams, e.g. {"terrain": 0.2}: probability per window of hiding the
    # stream (zeros, as a cube without it reads), so one model maps cubes that lack it (post-only
    # tiles such as Chattogram's) and trains on inventories with and without it
    stream_dropout: dict = field(default_factory=dict)
    # probability per acquisition of added haze (chips.haze): top-of-atmosphere or hazy scenes
    haze: float = 0.0
    # imagery standardised by the training set's statistics ("global") or by each acquisition's own
    # median and spread ("scene", reader.SCENE: haze augmentation then has nothing to add)
    normalise: str = "global"
    # training windows: the paper's, every half window in the index; a window needs this share of
    # valid, inventoried pixels
    window: int = PAPER_WINDOW
    stride: int = PAPER_WINDOW // 2
    block: int | None = None
    min_usable: float = 0.5
    batch_size: int = 8
    epochs: int = 20
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    positive_boost: float = 3.0
    # random crops: each training window moves by up to a stride inside its split (chips.shift_windows)
    crop_shift: bool = True
    # radiometric augmentation, sd of per-band gain and offset (normalised units): regions differ in
    # sun, season and atmosphere; 0.15 instead of 0.05 raised the demo's unseen-region MCC 0.79 -> 0.82
    jitter: float = 0.15
    patience: int = 5
    seed: int = 0
    model: dict = field(default_factory=dict)
    init_from: str | None = None
    amp: bool = True
    threads: int | None = None
    progress: bool = True
    strategy: str = "combined"
    # when worker processes are lost mid-run, wait for replacements and resume from last.pt this many
    # times (see train)
    restarts: int = 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["streams"] = list(self.streams)
        d["bands"] = list(self.bands) if self.bands is not None else None
        return d


#: The paper's stem widths; streams not listed here get ``OTHER_STEM_WIDTH``.
DEFAULT_STEM_WIDTHS: dict[str, int] = {"pre": 24, "post": 24, "terrain": 16}
OTHER_STEM_WIDTH = 24


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`LandslideNet`; stored in checkpoints as plain JSON types.

    ``streams`` maps stream name to input channels in the order the stems are concatenated, e.g.
    ``{"pre": 3, "post": 3, "terrain": 2}``, ``{"post": 4}`` or ``{"post": 4, "terrain": 2}``.
    ``prior`` is the expected positive fraction: the output biases start at ``log(p / (1 - p))`` so
    the first steps do not spend themselves pushing a 50 % guess down to a ~2 % landslide share
    (``None`` leaves the biases at 0).
    """

    streams: dict[str, int]
    stem_widths: dict[str, int] | None = None
    encoder_blocks: tuple[int, ...] = (3, 4, 6, 3)
    encoder_widths: tuple[int, ...] = (64, 128, 256, 256)
    decoder_widths: tuple[int, ...] | None = None
    fullres_width: int | None = None
    dropout: float = 0.1
    deep_supervision: bool = True
    prior: float | None = 0.02
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        self.streams = {str(k): int(v) for k, v in dict(self.streams).items()}
        if not self.streams:
            raise ValueError("ModelConfig.streams is empty: give at least one input stream, e.g. {'post': 4}")
        for name, ch in self.streams.items():
            if not name.isidentifier():
                raise ValueError(f"stream name {name!r} must be a Python identifier (it names a submodule)")
            if ch < 1:
                raise ValueError(f"stream {name!r} has {ch} channels; it needs at least 1")
        if self.stem_widths is not None:
            self.stem_widths = {str(k): int(v) for k, v in dict(self.stem_widths).items()}
        self.encoder_blocks = tuple(int(b) for b in self.encoder_blocks)
        self.encoder_widths = tuple(int(w) for w in self.encoder_widths)
        if len(self.encoder_blocks) != len(self.encoder_widths) or len(self.encoder_blocks) < 2:
            raise ValueError(
                f"encoder_blocks {self.encoder_blocks} and encoder_widths {self.encoder_widths} "
                "need the same length (>= 2)"
            )
        if any(b < 1 for b in self.encoder_blocks) or any(w < 1 for w in self.encoder_widths):
            raise ValueError("encoder blocks and widths must be positive")
        if self.decoder_widths is not None:
            self.decoder_widths = tuple(int(w) for w in self.decoder_widths)
            if len(self.decoder_widths) != len(self.encoder_widths) + 1:
                raise ValueError(
                    f"decoder_widths needs {len(self.encoder_widths) + 1} entries (one per "
                    f"upsampling step down to full resolution), got {self.decoder_widths}"
                )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        if self.prior is not None and not 0.0 < float(self.prior) < 1.0:
            raise ValueError(f"prior must be in (0, 1) or None, got {self.prior}")

    # derived values
    def resolved_stem_widths(self) -> dict[str, int]:
        """Stem width per stream: explicit ``stem_widths``, else the paper's, else 24."""
        given = self.stem_widths or {}
        return {s: int(given.get(s, DEFAULT_STEM_WIDTHS.get(s, OTHER_STEM_WIDTH))) for s in self.streams}

    def resolved_decoder_widths(self) -> tuple[int, ...]:
        """Decoder width per step, coarse to fine; default mirrors the encoder then halves twice."""
        if self.decoder_widths is not None:
            return self.decoder_widths
        w = self.encoder_widths
        mirrored = [w[i] for i in reversed(range(len(w) - 1))]  # paper: 256, 128, 64
        return tuple(mirrored + [max(w[0] // 2, 4), max(w[0] // 4, 4)])  # paper: 32, 16

    def resolved_fullres_width(self) -> int:
        return int(self.fullres_width) if self.fullres_width is not None else self.resolved_decoder_widths()[-1]

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (stem /2, maxpool /2, one /2 per later stage)."""
        return 2 ** (len(self.encoder_widths) + 1)

    # serialisation
    def to_dict(self) -> dict:
        """Plain dict/list/int/float/bool/None only, so ``torch.load(weights_only=True)`` accepts it."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo should not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(d)
        for k in ("encoder_blocks", "encoder_widths", "decoder_widths"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


# building blocks


#: Input height and width must be multiples of this for the default model (its own:
#: ``ModelConfig.size_multiple``).
INPUT_MULTIPLE = ModelConfig(streams={"post": 1}).size_multiple
