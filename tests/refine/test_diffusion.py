"""Coarse-to-fine objective and sampling: v target, clean codebook 1, condition drop, overfitting, schedulers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from ssmttm.refine.diffusion import (
    DiffusionConfig,
    diffusion_loss,
    guided,
    make_scheduler,
    pick_role,
    row_generators,
    sample_primary,
    sample_secondary,
    training_batch,
)
from tests.refine._fixtures import CFG, D, K, Recorder, text_batch, tiny_unet


def latents(b: int, t: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, K * D, t, generator=torch.Generator().manual_seed(seed))


def test_schedulers_come_from_diffusers():
    kinds = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}
    for name, cls in kinds.items():
        s = make_scheduler(name, 100)
        assert isinstance(s, cls)
        assert s.config.beta_schedule == "squaredcos_cap_v2" and s.config.prediction_type == "v_prediction"
        assert s.config.num_train_timesteps == 100
    assert make_scheduler("dpm++").config.algorithm_type == "dpmsolver++"
    assert make_scheduler("ddpm").config.clip_sample is False
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("euler")
    with pytest.raises(ValueError, match="scheduler"):
        DiffusionConfig(scheduler="euler")


def test_v_target_matches_diffusers_get_velocity():
    z = latents(16)
    batch = training_batch(z, CFG, "secondary", generator=torch.Generator().manual_seed(3))
    ref = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    x0 = z[:, D:]
    assert torch.allclose(batch.target, ref.get_velocity(x0, batch.noise, batch.timesteps), atol=1e-6)
    abar = ref.alphas_cumprod[batch.timesteps][:, None, None]
    assert torch.allclose(batch.target, abar.sqrt() * batch.noise - (1 - abar).sqrt() * x0, atol=1e-5)
    assert torch.allclose(batch.model_input[:, D:], abar.sqrt() * x0 + (1 - abar).sqrt() * batch.noise, atol=1e-5)
    assert batch.timesteps.min() >= 0 and batch.timesteps.max() < 100
    again = training_batch(z, CFG, "secondary", generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.noise, batch.noise) and torch.equal(again.timesteps, batch.timesteps)


def test_secondary_only_ever_sees_the_clean_codebook1():
    z = latents(4)
    batch = training_batch(z, CFG, "secondary", generator=torch.Generator().manual_seed(0))
    assert batch.model_input.shape == (4, K * D, 8) and batch.target.shape == (4, (K - 1) * D, 8)
    assert torch.equal(batch.model_input[:, :D], z[:, :D])  # clean, not noised
    assert not torch.allclose(batch.model_input[:, D:], z[:, D:])  # the rest is noised
    model = Recorder(tiny_unet())
    text, mask = text_batch(4)
    diffusion_loss(model, z, text, mask, CFG, "secondary", generator=torch.Generator().manual_seed(1))
    cb1 = torch.randn(2, D, 8)
    out = sample_secondary(
        model, cb1, text[:2], mask[:2], steps=4, guidance_scale=2.0, generator=row_generators([1, 2])
    )
    assert torch.equal(out[:, :D], cb1)
    assert torch.equal(model.calls[0]["x"][:, :D], z[:, :D])
    for call in model.calls[1:]:  # every sampling step: [cond; uncond] halves, both with the given codebook 1
        assert torch.equal(call["x"][:, :D], torch.cat([cb1, cb1]))
    # The primary role diffuses codebook 1 alone.
    primary = training_batch(z, CFG, "primary", generator=torch.Generator().manual_seed(0))
    assert primary.model_input.shape == primary.target.shape == (4, D, 8)


def test_condition_drop_uses_the_null_embedding():
    z, (text, mask) = latents(4), text_batch(4)
    for p, expected in ((1.0, True), (0.0, False)):
        model = Recorder(tiny_unet())
        cfg = dataclasses.replace(CFG, cond_drop_prob=p)
        loss = diffusion_loss(model, z, text, mask, cfg, generator=torch.Generator().manual_seed(0))
        assert bool((model.calls[0]["drop"] == expected).all())
        loss.backward()
        grad = model.model.null_text.grad
        assert (grad is not None and grad.abs().sum() > 0) == expected
    # With every condition dropped the loss does not depend on the captions.
    cfg, model = dataclasses.replace(CFG, cond_drop_prob=1.0), tiny_unet()
    a = diffusion_loss(model, z, text, mask, cfg, generator=torch.Generator().manual_seed(0))
    b = diffusion_loss(model, z, text * 3 + 1, mask, cfg, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-6)


def test_guidance_combines_cond_and_uncond():
    model = tiny_unet()
    text, mask = text_batch(2)
    x, t = torch.randn(2, K * D, 8), torch.tensor(40)
    with torch.no_grad():
        cond = model(x, t, text, mask)
        uncond = model(x, t, text, mask, drop=torch.ones(2, dtype=torch.bool))
        assert torch.allclose(guided(model, x, t, text, mask, 1.0), cond, atol=1e-5)
        assert torch.allclose(guided(model, x, t, text, mask, 0.0), uncond, atol=1e-5)
        assert torch.allclose(guided(model, x, t, text, mask, 3.0), uncond + 3 * (cond - uncond), atol=1e-4)


def test_tiny_model_overfits_one_example():
    torch.manual_seed(0)
    model = tiny_unet().train()
    cfg = dataclasses.replace(CFG, cond_drop_prob=0.0)
    z, (text, mask) = latents(1, t=16), text_batch(1)
    z, text, mask = z.expand(16, -1, -1), text.expand(16, -1, -1), mask.expand(16, -1)

    def held_out_loss() -> float:  # the same 64 (timestep, noise) draws before and after
        with torch.no_grad():
            zz, tt, mm = z[:1].expand(64, -1, -1), text[:1].expand(64, -1, -1), mask[:1].expand(64, -1)
            return float(diffusion_loss(model, zz, tt, mm, cfg, generator=torch.Generator().manual_seed(123)))

    before = held_out_loss()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = diffusion_loss(model, z, text, mask, cfg, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++"])
def test_sampling_returns_finite_latents(scheduler):
    model = tiny_unet()
    text, mask = text_batch(2)
    cb1 = torch.randn(2, D, 8)
    out = sample_secondary(
        model, cb1, text, mask, steps=5, scheduler_name=scheduler, guidance_scale=3.0, generator=row_generators([0, 1])
    )
    assert out.shape == (2, K * D, 8) and torch.isfinite(out).all()
    primary = tiny_unet("primary")
    cb1_gen = sample_primary(
        primary, text, mask, n_frames=8, steps=5, scheduler_name=scheduler, generator=row_generators([0, 1])
    )
    assert cb1_gen.shape == (2, D, 8) and torch.isfinite(cb1_gen).all()
    with pytest.raises(ValueError, match="one per row"):
        sample_secondary(model, cb1, text, mask, steps=2, scheduler_name=scheduler, generator=row_generators([0]))


@pytest.mark.parametrize("scheduler", ["ddpm", "dpm++"])
def test_seeded_sampling_is_batch_independent(scheduler):
    model = tiny_unet()
    text, mask = text_batch(3, s=4)
    cb1 = torch.randn(3, D, 8)
    seeds = [11, 22, 33]
    kw = dict(steps=6, scheduler_name=scheduler, guidance_scale=3.0)
    batch = sample_secondary(model, cb1, text, mask, generator=row_generators(seeds), **kw)
    again = sample_secondary(model, cb1, text, mask, generator=row_generators(seeds), **kw)
    assert torch.equal(batch, again)  # seeded
    for i in (2, 0):  # alone, and with another neighbour, a row gives the same result
        alone = sample_secondary(
            model, cb1[i : i + 1], text[i : i + 1], mask[i : i + 1], generator=row_generators([seeds[i]]), **kw
        )
        assert torch.allclose(alone, batch[i : i + 1], atol=1e-4), (alone - batch[i : i + 1]).abs().max()
    pair = sample_secondary(
        model, cb1[[1, 0]], text[[1, 0]], mask[[1, 0]], generator=row_generators([99, seeds[0]]), **kw
    )
    assert torch.allclose(pair[1], batch[0], atol=1e-4)
    assert not torch.allclose(pair[0], batch[1], atol=1e-2)  # another seed, another result


def test_pick_role():
    g = torch.Generator().manual_seed(0)
    assert {pick_role(CFG, has_primary=False, generator=g) for _ in range(20)} == {"secondary"}
    roles = [pick_role(CFG, has_primary=True, generator=g) for _ in range(200)]
    assert 60 < roles.count("primary") < 140
