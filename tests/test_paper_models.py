"""The SD3-class policy (true CFG, as Flow-GRPO on SD3.5), every method on it, and the diffusers-format export."""
import os
import subprocess
import sys

import pytest
import torch

from g2rpo.export import SIDECAR, export_diffusers, load_exported
from g2rpo.loop import Trainer
from g2rpo.models.flux import pack, tiny_flux_policy, unpack
from g2rpo.models.sd3 import tiny_sd3_policy
from g2rpo.models.text import HashTextEncoder
from g2rpo.registry import METHODS, make_method
from g2rpo.sampling import ode_sample
from tests.helpers import PROMPTS, REWARDS, no_decay, shared


def cond(n=3):
    return HashTextEncoder()((PROMPTS * 2)[:n])


def inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.rand(n, generator=g)


def count_rows(transformer):
    """Transformer rows evaluated, through a forward pre-hook (the policy's own counter counts policy rows)."""
    rows = []
    transformer.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["hidden_states"].shape[0]), with_kwargs=True)
    return rows


def raw(policy, x, sigma, tokens, pooled):
    """One plain transformer call, as StableDiffusion3Pipeline makes it (timestep = sigma * 1000)."""
    return policy.transformer(hidden_states=x, encoder_hidden_states=tokens, pooled_projections=pooled,
                              timestep=sigma * 1000, return_dict=False)[0]


@torch.no_grad()
def test_sd3_guidance_one_is_a_single_conditional_call():
    p, (x, s), c = tiny_sd3_policy(0, guidance_scale=1.0), inputs(), cond()
    rows = count_rows(p.transformer)
    v = p(x, s, c)
    assert rows == [3] and p.calls["rollout"] == 3 and p.rows_per_call == 1
    assert torch.equal(v, raw(p, x, s, c.tokens, c.pooled))


@torch.no_grad()
def test_sd3_true_cfg_equals_two_separate_calls_and_counts_rows():
    p, (x, s), c = tiny_sd3_policy(0, guidance_scale=4.5), inputs(), cond()
    rows = count_rows(p.transformer)
    v = p(x, s, c)
    assert rows == [6] and p.calls["rollout"] == 3 and p.rows_per_call == 2  # one batched [uncond; cond] call
    neg = p.negative
    v_c = raw(p, x, s, c.tokens, c.pooled)
    v_u = raw(p, x, s, neg.tokens.expand(3, -1, -1), neg.pooled.expand(3, -1))
    assert (v_c - v_u).abs().max() > 1e-2  # the guidance term is not trivially zero
    torch.testing.assert_close(v, v_u + 4.5 * (v_c - v_u), atol=1e-5, rtol=1e-5)
    one_by_one = torch.cat([p(x[i : i + 1], s[i : i + 1], c[i]) for i in range(3)])
    torch.testing.assert_close(v, one_by_one, atol=1e-5, rtol=1e-5)
    with torch.enable_grad():
        p(x, s, c)
    assert p.calls == {"rollout": 6, "train": 3} and rows == [6, 3, 3, 2, 2, 2, 6]


KNOBS = {"g2rpo": {"eta_step_list": (0, 2)}, "dancegrpo": {"gradient_accumulation_steps": 4, "world_size": 1},
         "mixgrpo": {"gradient_accumulation_steps": 4, "world_size": 1}, "flowgrpo": {"beta": 0.04, "use_lora": False},
         "diffusionnft": {"use_lora": False}}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_a_round_on_the_sd3_policy(name):
    m = make_method(name, KNOBS | {name.split("-")[0]: KNOBS.get(name.split("-")[0], {}) | {"optim": no_decay(1e-4)}})
    sh = shared()
    t = Trainer(tiny_sd3_policy(0), HashTextEncoder(), m, REWARDS, sh, PROMPTS)
    rows = count_rows(t.policy.transformer)  # after the Trainer: Flow-GRPO's deep-copied reference has no hook
    before = [q.detach().clone() for q in t.policy.parameters()]
    metrics = t.step()
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["optimizer_steps"] > 0
    assert metrics["first_ratio_max_dev"] < 1e-6
    cost, P = m.cost(sh), sh.prompts_per_round
    assert metrics["nfe_rollout"] == P * cost.nfe_rollout and metrics["nfe_train"] == P * cost.nfe_train
    assert sum(rows) == 2 * (metrics["nfe_rollout"] + metrics["nfe_train"])  # CFG: 2 transformer rows per row
    assert any(not torch.equal(a, b) for a, b in zip(before, t.policy.parameters()))


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8,),
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         layers_per_block=1, norm_num_groups=8, sample_size=8, scaling_factor=1.0, shift_factor=0.0)


def check_roundtrip(policy, folder):
    export_diffusers(policy, folder, method="g2rpo", round_idx=7)
    loaded = load_exported(folder)
    assert type(loaded) is type(policy) and loaded.latent_shape == policy.latent_shape
    x, s = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, s, cond()), policy(x, s, cond()))
    return loaded


def test_flux_export_loads_back_and_samples_in_diffusers_flux_pipeline(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    policy = tiny_flux_policy(0, guidance=3.5, timestep_convention="float")  # the pipeline feeds sigma as a float
    with torch.no_grad():
        next(policy.transformer.parameters()).add_(0.1)  # not the seed's weights: the export must carry them
    check_roundtrip(policy, tmp_path / "flux")
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(), text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=FluxTransformer2DModel.from_pretrained(tmp_path / "flux"))
    pipe.set_progress_bar_config(disable=True)
    c, x_T = cond(2), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(prompt_embeds=c.tokens, pooled_prompt_embeds=c.pooled, height=8, width=8, num_inference_steps=2,
              guidance_scale=3.5, latents=pack(x_T, 2))
    with torch.no_grad():
        out = pipe(output_type="latent", **kw).images
        ours = ode_sample(policy, x_T, pipe.scheduler.sigmas, c)[1][-1]  # the same grid, plain Euler
        torch.testing.assert_close(unpack(out, 3, 8, 8, 2), ours, atol=1e-5, rtol=1e-5)
        img = pipe(output_type="pt", **kw).images
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all()


def test_sd3_export_loads_back_and_samples_in_diffusers_sd3_pipeline(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    policy = tiny_sd3_policy(0, guidance_scale=4.5)
    with torch.no_grad():
        next(policy.transformer.parameters()).add_(0.1)
    loaded = check_roundtrip(policy, tmp_path / "sd3")
    assert loaded.guidance_scale == 4.5 and torch.equal(loaded.neg_tokens, policy.neg_tokens)
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel.from_pretrained(tmp_path / "sd3"),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    c, neg, x_T = cond(2), policy.negative, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(prompt_embeds=c.tokens, pooled_prompt_embeds=c.pooled,
              negative_prompt_embeds=neg.tokens.expand(2, -1, -1),
              negative_pooled_prompt_embeds=neg.pooled.expand(2, -1), height=8, width=8, num_inference_steps=2,
              guidance_scale=4.5, latents=x_T)
    with torch.no_grad():
        out = pipe(output_type="latent", **kw).images
        ours = ode_sample(policy, x_T, pipe.scheduler.sigmas, c)[1][-1]  # same grid; CFG order and t*1000 checked
        torch.testing.assert_close(out, ours, atol=1e-5, rtol=1e-5)
        img = pipe(output_type="pt", **kw).images
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all()


def test_a_crash_mid_export_leaves_the_previous_export_and_no_temporaries(tmp_path, monkeypatch):
    folder = tmp_path / "sd3"
    policy = tiny_sd3_policy(0)
    export_diffusers(policy, folder)
    files = {f.name: f.read_bytes() for f in folder.iterdir()}

    def half_write(self, path, **kw):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "diffusion_pytorch_model.safetensors"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with torch.no_grad():
        next(policy.transformer.parameters()).add_(0.1)
    monkeypatch.setattr(type(policy.transformer), "save_pretrained", half_write)
    with pytest.raises(OSError, match="disk full"):
        export_diffusers(policy, folder)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == files
    assert [f.name for f in tmp_path.iterdir()] == ["sd3"]
    monkeypatch.undo()
    # temporaries of a killed writer are cleared by the next export; a folder it did not write is never replaced
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".sd3.{int(dead.stdout)}.export-tmp").mkdir()
    export_diffusers(policy, folder)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["sd3"] and (folder / SIDECAR).is_file()
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError):
        export_diffusers(policy, tmp_path / "other")
