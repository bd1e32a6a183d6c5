"""The CNN: shapes, gradient flow per stream, size/compute, checkpoints, determinism, receptive field."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from landslide_dask.train.model import (
    LandslideNet,
    ModelConfig,
    count_parameters,
    describe,
    flops_per_pixel,
    receptive_field_margin,
)

PAPER_STREAMS = {"pre": 3, "post": 3, "terrain": 2}
SMALL = dict(encoder_widths=(8, 16, 32, 32), stem_widths={"pre": 4, "post": 4, "terrain": 4})


def small(streams: dict[str, int] | None = None, **kw) -> ModelConfig:
    args = {**SMALL, **kw}
    return ModelConfig(streams=dict(streams or PAPER_STREAMS), **args)


def inputs(cfg: ModelConfig, n: int, h: int, w: int, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(n, c, h, w, generator=g, dtype=dtype) for s, c in cfg.streams.items()}


def randomise_bn(model: torch.nn.Module, seed: int = 0, bias: float = 0.0) -> None:
    """Give every BN non-trivial affine and running stats, as after training (the zero-initialised
    residual gammas would otherwise switch the residual branches off). A positive ``bias`` keeps
    most ReLUs open, so gradients reach the whole theoretical receptive field."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.5 + bias)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (128, 128), (64, 128)])
@pytest.mark.parametrize("train", [True, False])
def test_output_shapes(hw, train):
    h, w = hw
    torch.manual_seed(0)
    cfg = small()
    model = LandslideNet(cfg).train(train)
    with torch.no_grad():
        out = model(inputs(cfg, 2, h, w))
    assert out["logits"].shape == (2, 1, h, w)
    assert [tuple(s.shape) for s in out["side"]] == [(2, 1, h // f, w // f) for f in (16, 8, 4, 2)]
    assert torch.isfinite(out["logits"]).all()


def test_no_side_outputs_without_deep_supervision():
    cfg = small(deep_supervision=False)
    out = LandslideNet(cfg)(inputs(cfg, 1, 64, 64))
    assert out["side"] == [] and out["logits"].shape == (1, 1, 64, 64)


def test_bad_inputs_refused():
    cfg = small()
    model = LandslideNet(cfg).eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(inputs(cfg, 1, 100, 96))
    x = inputs(cfg, 1, 64, 64)
    del x["terrain"]
    with pytest.raises(KeyError, match="terrain"):
        model(x)
    x = inputs(cfg, 1, 64, 64)
    x["pre"] = torch.randn(1, 4, 64, 64)
    with pytest.raises(ValueError, match="pre"):
        model(x)
    with pytest.raises(ValueError):
        ModelConfig(streams={"post": 3}, encoder_widths=(8, 16), encoder_blocks=(1, 1, 1))


# ------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize(
    "streams",
    [
        {"pre": 3, "post": 3, "terrain": 2},
        {"post": 3},
        {"post": 3, "terrain": 2},
        {"pre": 4, "post": 4, "terrain": 2},
        {"post": 4},
        {"terrain": 2, "post": 4, "pre": 4},  # order is the user's
    ],
)
def test_gradients_reach_every_stream(streams):
    torch.manual_seed(0)
    cfg = small(streams, stem_widths=None)  # default widths: 24/24/16, fused to 8 by 1x1
    model = LandslideNet(cfg).train()
    x = inputs(cfg, 2, 64, 64)
    target = (torch.rand(2, 1, 64, 64) < 0.1).float()
    out = model(x)
    loss = F.binary_cross_entropy_with_logits(out["logits"], target)
    for s in out["side"]:
        loss = loss + F.binary_cross_entropy_with_logits(
            F.interpolate(s, size=(64, 64), mode="bilinear", align_corners=False), target
        )
    loss.backward()
    for name in streams:
        g = model.stems[name][0].weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is not connected to the loss"
    assert model.fullres[0][0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0
    assert all(h.weight.grad.abs().sum() > 0 for h in model.side_heads)


# ------------------------------------------------------------------------------ size and compute
def test_paper_config_size_and_flops():
    cfg = ModelConfig(streams=PAPER_STREAMS)
    model = LandslideNet(cfg)
    n = count_parameters(model)
    # ResNet-34 has 21.8 M parameters, 13.1 M of them in its 512-wide last stage; with a 256-wide
    # last stage the encoder is ~11.6 M and the residual U-Net decoder adds ~3 M.
    print(f"paper config: {n:,} parameters")
    assert 12e6 < n < 18e6
    fpp = flops_per_pixel(model, cfg, 224)
    print(f"paper config: {fpp:,.0f} FLOPs/pixel at 224")
    assert 1.5e5 < fpp < 4e5  # ResNet-34 at 224 is 7.3 GFLOP = 146 k/pixel, plus the decoder
    assert model.training  # flops_per_pixel restores the mode


def test_flops_per_pixel_constant_and_matches_flop_counter():
    cfg = small()
    model = LandslideNet(cfg)
    f64, f128 = flops_per_pixel(model, cfg, 64), flops_per_pixel(model, cfg, 128)
    assert f64 > 0 and abs(f128 - f64) / f128 < 0.10
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs(cfg, 1, 128, 128))
    assert counter.get_total_flops() / 128**2 == pytest.approx(f128, rel=1e-9)
    # a wider model must cost more: the hooks see the real layers
    wider = small(encoder_widths=(16, 32, 64, 64))
    assert flops_per_pixel(LandslideNet(wider), wider, 64) > 2 * f64


# ------------------------------------------------------------------------------- serialisation
def test_config_round_trip():
    cfg = ModelConfig(
        streams={"post": 4, "terrain": 2},
        stem_widths={"post": 32},
        decoder_widths=(64, 32, 16, 16, 8),
        dropout=0.2,
        deep_supervision=False,
        prior=None,
        fullres_width=12,
    )
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = ModelConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert list(back.streams) == ["post", "terrain"]
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**d, "widths": [1]})


def test_checkpoint_loads_weights_only(tmp_path):
    torch.manual_seed(1)
    cfg = small({"post": 4, "terrain": 2})
    model = LandslideNet(cfg).train()
    randomise_bn(model)
    with torch.no_grad():
        model(inputs(cfg, 2, 64, 64, seed=3))  # move the BN running statistics
    path = tmp_path / "ck.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": cfg.to_dict()}, path)

    ck = torch.load(path, weights_only=True)
    loaded = LandslideNet(ModelConfig.from_dict(ck["model_config"]))
    loaded.load_state_dict(ck["state_dict"])
    x = inputs(cfg, 1, 96, 64, seed=5)
    model.eval(), loaded.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
        fresh = LandslideNet(cfg).eval()(x)
    assert torch.equal(a["logits"], b["logits"])
    assert all(torch.equal(s, t) for s, t in zip(a["side"], b["side"]))
    assert not torch.equal(a["logits"], fresh["logits"])  # the comparison can fail


# ------------------------------------------------------------------------- modes and dropout
def test_eval_deterministic_dropout_only_in_train():
    torch.manual_seed(0)
    cfg = small(dropout=0.5)
    model = LandslideNet(cfg)
    randomise_bn(model)
    x = inputs(cfg, 2, 64, 64)
    with torch.no_grad():
        model.eval()
        e1, e2 = model(x)["logits"], model(x)["logits"]
        model.train()
        t1, t2 = model(x)["logits"], model(x)["logits"]
    assert torch.equal(e1, e2)
    assert not torch.equal(t1, t2)  # dropout masks differ between calls

    nodrop = small(dropout=0.0)
    m0 = LandslideNet(nodrop).train()
    randomise_bn(m0)
    with torch.no_grad():
        assert torch.equal(m0(x)["logits"], m0(x)["logits"])  # train-mode BN alone is deterministic


def test_output_starts_at_prior():
    torch.manual_seed(0)
    cfg = small(prior=0.02)
    model = LandslideNet(cfg).eval()
    with torch.no_grad():
        p = torch.sigmoid(model(inputs(cfg, 2, 64, 64))["logits"])
    assert 0.015 < p.mean().item() < 0.03
    assert model.head.bias.item() == pytest.approx(math.log(0.02 / 0.98))
    assert LandslideNet(small(prior=None)).head.bias.item() == 0.0


# ---------------------------------------------------------------------------- receptive field
@pytest.mark.parametrize("blocks", [(3, 4, 6, 3), (1, 2, 1, 1)])
@pytest.mark.parametrize("axis", [-1, -2])
def test_receptive_field_margin_is_exact(blocks, axis):
    """Inputs beyond the margin never change the pixel; gradients reach (nearly) the margin."""
    torch.manual_seed(0)
    cfg = small({"post": 3, "terrain": 2}, encoder_blocks=blocks, stem_widths={"post": 4, "terrain": 4})
    model = LandslideNet(cfg).double().eval()
    randomise_bn(model, bias=2.0)
    margin = receptive_field_margin(model)
    assert margin == receptive_field_margin(cfg) > 0
    length = (2 * margin + 96 + 31) // 32 * 32
    shape = (64, length) if axis == -1 else (length, 64)
    g = torch.Generator().manual_seed(1)
    x = {s: torch.randn(1, c, *shape, dtype=torch.float64, generator=g) for s, c in cfg.streams.items()}
    # the field's far edge is reached at one phase of the 32-pixel cycle of the coarsest level
    c0 = length // 2 // 32 * 32 + 28

    def line(t: torch.Tensor, sl) -> torch.Tensor:
        return t[..., sl] if axis == -1 else t[..., sl, :]

    def perturbed(sl: slice) -> dict[str, torch.Tensor]:
        out = {k: v.clone() for k, v in x.items()}
        for v in out.values():
            line(v, sl).add_(10 * torch.randn(line(v, sl).shape, dtype=v.dtype, generator=g))
        return out

    with torch.no_grad():
        base = model(x)["logits"]
        for sl in (slice(0, c0 - margin), slice(c0 + margin + 1, None)):
            out = model(perturbed(sl))["logits"]
            assert torch.equal(line(out, c0), line(base, c0)), f"output at {c0} changed by inputs beyond {margin}"
            assert not torch.equal(out, base)  # the perturbation did change the output elsewhere

    # the margin is not an over-estimate: this pixel's gradient reaches to within one coarse stride
    xg = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    grads = torch.autograd.grad(line(model(xg)["logits"], c0)[0, 0, 32], list(xg.values()))
    keep = 3 if axis == -1 else 2
    reach = sum(gg.abs().sum(dim=tuple(d for d in range(4) if d != keep)) for gg in grads).nonzero().flatten()
    extent = max(c0 - reach.min().item(), reach.max().item() - c0)
    assert margin - 32 <= extent <= margin


def test_describe_mentions_the_essentials():
    text = describe(small({"post": 4, "terrain": 2}), size=64)
    assert "post[4 ch" in text and "terrain[2 ch" in text
    assert "parameters" in text and "FLOPs/pixel" in text and "receptive-field margin" in text
