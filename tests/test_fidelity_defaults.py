"""Method defaults against the official code (issue 17): LoRA, optimizer steps per round, MixGRPO's window, Flow-GRPO's
zero-advantage filter and rollout grid, bf16 rollout latents, official NFE counts. Each official rule is restated here
in a few lines from the official scripts named in the docstrings."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from baselines.dancegrpo import DanceGRPO, DanceGRPOConfig
from baselines.flowgrpo import FlowGRPO, FlowGRPOConfig
from baselines.mixgrpo import MixGRPO, MixGRPOConfig
from benchmarks.plan import PlanError, describe, make_plan
from g2rpo.config import SharedConfig
from g2rpo.loop import generator, trained_meta
from g2rpo.method import Layout, Rollout, Transitions
from g2rpo.models.lora import adapter_parameters
from g2rpo.presets import PRESETS, Preset
from g2rpo.registry import make_method
from g2rpo.schedules import flow_match_sigmas
from g2rpo.sde import sde_step
from tests.helpers import no_decay, rollout, shared, trainer


def fake_rollout(P, G, S, adv=None):
    """A rollout's global view: only what advantages and update_groups read (layout, rows, advantages)."""
    R = P * G * S
    tr = Transitions(prompt=torch.arange(P).repeat_interleave(G * S), k=torch.arange(S).repeat(P * G), x=None,
                     sigma=None, sigma_next=None, g=None, x_next=None, log_prob_old=torch.zeros(R, 1))
    if adv is not None:
        tr.adv = adv.reshape(P * G, 1).repeat_interleave(S, 0)
    return Rollout(images=None, image_prompt=torch.arange(P).repeat_interleave(G), transitions=tr,
                   layout=Layout(prompts=P, generations=G, steps=S))


def step_samples(groups, S):
    return [sorted(set((g // S).tolist())) for g in groups]


# 1. Flow-GRPO trains its LoRA unless told otherwise; a full fine-tune needs an explicit rate

def test_flowgrpo_trains_its_lora_by_default():
    paper = PRESETS["paper"]
    m = make_method("flowgrpo", paper.knobs)
    assert m.lora(paper.shared) == "flowgrpo-flux" and m.optim.lr == 3e-4
    assert FlowGRPO().lora(SharedConfig(model="tiny-sd3")) == "flowgrpo-sd3"
    assert FlowGRPO().lora(SharedConfig(model="sd35", lora="flowgrpo-sd3")) == "flowgrpo-sd3"
    for name in ("g2rpo", "dancegrpo", "mixgrpo"):  # their official FLUX runs fine-tune every weight
        assert make_method(name, paper.knobs).lora(paper.shared) == ""
    pocket = PRESETS["pocket"]  # equal settings on the pocket model: every method fine-tunes every weight
    assert make_method("flowgrpo", pocket.knobs).lora(pocket.shared) == ""
    sh = shared()
    t = trainer(FlowGRPO(), sh)
    trained = {id(p) for g in t.opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in adapter_parameters(t.policy).values()} and trained
    assert trained_meta(t.method, sh, 1)["settings"]["lora"] == "flowgrpo-flux"  # evaluation rebuilds the adapter


def test_full_finetune_at_the_lora_rate_is_refused_unless_the_rate_is_given():
    sh = shared()
    with pytest.raises(ValueError, match="official LoRA rate"):
        FlowGRPO(FlowGRPOConfig(use_lora=False)).validate(sh)
    FlowGRPO(FlowGRPOConfig(use_lora=False, optim=no_decay(3e-4))).validate(sh)  # explicit: allowed, even at 3e-4
    with pytest.raises(ValueError, match="contradicts"):
        FlowGRPO(FlowGRPOConfig(use_lora=False, optim=no_decay())).validate(shared(lora="flowgrpo-flux"))
    preset = Preset(shared=sh, knobs={"flowgrpo": {"use_lora": False}})
    with pytest.raises(PlanError, match="official LoRA rate"):
        make_plan(preset, ["flowgrpo"], 1, 1, "rounds")
    runs = make_plan(preset, ["flowgrpo"], 1, 1, "rounds", lr=1e-5)  # --lr is explicit
    assert runs[1].build(preset).optim.lr == 1e-5


# 2. Optimizer steps per round: per-GPU accumulation x GPUs, as the official scripts

def test_paper_preset_takes_the_official_optimizer_steps():
    """DanceGRPO finetune_flux_grpo.sh: 16 GPUs x 1 prompt x 12, accumulation 4 per GPU -> 3 steps of 64.
    MixGRPO finetune_flux_grpo_MixGRPO.sh: accumulation 3 per GPU -> 4 steps per round (of 3 x 16 on the paper's GPUs).
    Flow-GRPO: 2 steps per round. G2RPO: one per noise-injection step (8)."""
    rows = {r["method"]: r for r in describe(make_plan(PRESETS["paper"], ["g2rpo", "flowgrpo", "dancegrpo", "mixgrpo"],
                                                         1, 300, "rounds"), PRESETS["paper"])}
    assert {m: (r["optimizer_steps_per_round"], r["samples_per_optimizer_step"]) for m, r in rows.items()} == {
        "g2rpo": (8, 24), "flowgrpo": (2, 96), "dancegrpo": (3, 64), "mixgrpo": (4, 48)}
    assert DanceGRPOConfig().gradient_accumulation_steps == 4 and DanceGRPOConfig().world_size == 16
    assert MixGRPOConfig().gradient_accumulation_steps == 3 and MixGRPOConfig().world_size == 32


@pytest.mark.parametrize("method,per_gpu", [(DanceGRPO(), 4), (MixGRPO(MixGRPOConfig(world_size=16)), 3)])
def test_each_step_takes_the_same_samples_from_every_gpu(method, per_gpu):
    P, G, S = 16, 12, 2  # the paper's round: one prompt (12 samples) per GPU
    groups = method.update_groups(fake_rollout(P, G, S), generator(0, "train", 0))
    assert len(groups) == G // per_gpu
    for g in groups:
        samples = torch.tensor(step_samples([g], S)[0])
        assert torch.bincount(samples // G, minlength=P).tolist() == [per_gpu] * P  # per_gpu from each GPU's prompt
    assert sorted(torch.cat(groups).tolist()) == list(range(P * G * S))


def test_one_process_steps_are_unchanged():
    """World size 1 (the pocket preset) keeps the single-shuffle split: same stream, same steps as before."""
    m = DanceGRPO(DanceGRPOConfig(gradient_accumulation_steps=8, world_size=1))
    groups = m.update_groups(fake_rollout(2, 8, 3), generator(0, "train", 0))
    gen = generator(0, "train", 0)
    m.select(16, 3, gen)
    order = torch.randperm(16, generator=gen)
    expected = (order[:, None] * 3 + torch.arange(3)).reshape(-1).split(24)
    assert all(torch.equal(a, b) for a, b in zip(groups, expected, strict=True))


def test_dry_run_json_shows_steps_per_round():
    out = subprocess.run([sys.executable, "-m", "benchmarks.run", "--preset", "paper", "--methods", "dancegrpo,mixgrpo",
                          "--dry-run", "--json"], capture_output=True, text=True, check=True).stdout
    assert [r["optimizer_steps_per_round"] for r in json.loads(out)] == [3, 4]


# 5. MixGRPO's window as the official progressive schedule with roll_back

def official_windows(n_steps, rounds, iters_per_group=25, group_size=4, roll_back=True):
    """MixGRPO GRPOTrainingStates (progressive, overlap step 1): train range(cur, min(cur + size, N - 2)), then
    count the round; after iters_per_group rounds cur moves by one; past N - 2 it returns to 0 (or stays)."""
    cur, it, out, top = 0, 0, [], n_steps - 2
    for _ in range(rounds):
        out.append(list(range(cur, min(cur + group_size, top))))
        it += 1
        if it >= iters_per_group:
            it, cur = 0, cur + 1
        if cur > top:
            cur, it = (0, 0) if roll_back else (top, it)
    return out


@pytest.mark.parametrize("n_steps,rounds,roll_back", [(16, 600, True), (25, 300, True), (10, 800, True), (16, 450, False)])
def test_mixgrpo_window_follows_the_official_schedule(n_steps, rounds, roll_back):
    m = MixGRPO(MixGRPOConfig(roll_back=roll_back))
    assert [m.candidate_steps(n_steps, r) for r in range(rounds)] == official_windows(n_steps, rounds, roll_back=roll_back)


def test_mixgrpo_window_at_the_end_of_the_schedule():
    m = MixGRPO()
    assert all(m.candidate_steps(16, r) == [11, 12, 13] for r in range(275, 300))  # ours was [11..14]
    assert m.candidate_steps(16, 14 * 25) == [] and m.candidate_steps(16, 15 * 25) == [0, 1, 2, 3]


def test_mixgrpo_round_with_an_empty_window_samples_by_ode_and_trains_nothing():
    sh = shared(num_steps=4)  # top = N - 2 = 2: windows [0, 1], [1], [], [0, 1]
    m = MixGRPO(MixGRPOConfig(window_size=2, window_shift_every=1, world_size=1, optim=no_decay(1e-4)))
    _, _, ro = rollout(m, sh, round_idx=2)
    lat = ro.latents
    assert torch.allclose(lat[:, :, 0], lat[:, :, 1], atol=1e-5) and len(ro.transitions.k) == 0  # no noise: one path
    history = trainer(m, sh).train(4)
    assert [h["optimizer_steps"] for h in history] == [2, 2, 0, 2]  # 6 samples, 3 per step


# 6. Flow-GRPO's zero-advantage filter re-admits samples to fill its batches

def test_zero_advantage_samples_are_readmitted_to_fill_the_batches():
    """train_sd3.py: kept = advantages != 0; if kept % num_batches_per_epoch, re-admit that many random dropped ones."""
    P, G, S = 2, 8, 3
    adv = torch.randn(P * G)
    adv[[1, 4, 9]] = 0  # 13 kept, 2 batches: one dropped sample comes back
    m = FlowGRPO()
    ro = fake_rollout(P, G, S, adv)
    ro.transitions.mask = ro.transitions.adv != 0
    groups = m.update_groups(ro, generator(0, "train", 0))
    kept = ro.transitions.mask.view(P * G, S)[:, 0]
    assert int(kept.sum()) == 14 and kept[[1, 4, 9]].sum() == 1
    assert [len(s) for s in step_samples(groups, S)] == [7, 7]  # 2 steps of equal size, as the official batches
    assert sorted(torch.cat(groups).tolist()) == torch.nonzero(kept.repeat_interleave(S)).squeeze(1).tolist()


def test_zero_advantage_filter_acts_per_gpu():
    """pickscore_sd3: 32 GPUs with 36 samples, 4 batches each: every GPU's kept count divides by 4."""
    W, per, S = 4, 12, 1
    adv = torch.randn(W * per)
    adv[[0, 13, 14, 30, 31, 32]] = 0  # kept per GPU: 11, 10, 12, 9
    m = FlowGRPO(FlowGRPOConfig(world_size=W, num_batches_per_epoch=4))
    ro = fake_rollout(W, per, S, adv)
    ro.transitions.mask = ro.transitions.adv != 0
    m.update_groups(ro, generator(0, "train", 0))
    kept = ro.transitions.mask.view(W, per).sum(1).tolist()
    assert kept == [12, 12, 12, 12]


# 7. Flow-GRPO's denoising reduction uses the shared schedule's grid

def test_num_rollout_steps_follows_the_shared_schedule():
    sh = SharedConfig(schedule="flow_match", num_steps=40, shift=3.0)
    assert torch.equal(FlowGRPO(FlowGRPOConfig(num_rollout_steps=10)).schedule(sh), flow_match_sigmas(10, 3.0))
    assert torch.equal(FlowGRPO(FlowGRPOConfig(num_rollout_steps=10)).schedule(dataclasses.replace(sh, schedule="shifted")),
                       dataclasses.replace(sh, schedule="shifted", num_steps=10).sigmas())


# 10. bf16 rollout latents (official Flow-GRPO), an option

def test_bf16_rollout_latents_are_fed_rounded_and_stored_in_fp32():
    """sd3_pipeline_with_logprob: the SDE step returns fp32, all_latents keeps it, the next step gets it cast to bf16."""
    sh = shared()
    policy, cond, a = rollout(FlowGRPO(FlowGRPOConfig(latent_dtype="bf16")), sh)
    _, _, b = rollout(FlowGRPO(), sh)
    lat = a.latents  # (N+1, P, G, ...)
    assert not torch.equal(lat[1:], lat[1:].bfloat16().float())  # stored: the fp32 samples
    assert 0 < (a.images - b.images).abs().max() < 0.05
    # step 1 of member 0 started from the bf16-rounded latent of step 0
    x1 = lat[1, 0, :1].bfloat16().float()
    v = policy(x1, a.transitions.sigma[1:2], cond[[0]])
    tr = a.transitions
    row = 1  # prompt 0, member 0, step 1
    out = sde_step(x1, v, tr.sigma[row], tr.sigma_next[row], tr.g[row], next_sample=tr.x_next[row])
    assert torch.allclose(out.log_prob, tr.log_prob_old[row], atol=1e-6)
    m = FlowGRPO(FlowGRPOConfig(latent_dtype="bf16", optim=no_decay(1e-4)))
    dev = trainer(m, sh).step()["first_ratio_max_dev"]
    assert 0 < dev < 1e-2  # training scores the stored fp32 latents: off 1 by the rounding, as the official code


# 8. The paper's NFE count beside ours

def test_official_rollout_count_matches_the_paper():
    """G2RPO's paper: 1216 / 1792 / 2188 model evaluations per prompt for Lambda {1}, {1,2}, {1,2,3} (N 16, G 12, M 0..7);
    our batched rollout reuses the anchor's velocity for the SDE step, G x |M| = 96 fewer, and evaluates the two
    points a member's completions share once, G x |M| x 2 x (|Lambda| - 1) fewer."""
    paper = PRESETS["paper"]
    for lams, official in (((1,), 1216), ((1, 2), 1792), ((1, 2, 3), 2188)):
        c = make_method("g2rpo", paper.knobs, granular_list=lams).cost(paper.shared)
        assert (c.nfe_rollout_official, c.nfe_rollout) == (official, official - 96 - 192 * (len(lams) - 1))
        ref = make_method("g2rpo", paper.knobs, granular_list=lams, rollout_mode="reference").cost(paper.shared)
        assert ref.nfe_rollout == official and ref.nfe_rollout_official is None
