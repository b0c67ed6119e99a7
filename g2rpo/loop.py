"""The method-agnostic loop: prompts -> rollout -> rewards -> advantages -> update -> log."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from typing import Callable

import torch

from .advantages import flat_group_share
from .config import SharedConfig
from .distributed import DataParallel
from .ema import EMA
from .method import Method, Transitions, nfe_per_round
from .models.lora import LORA_PRESETS, add_lora, has_lora
from .models.precision import enable_memory_savers
from .policy import Cond, FlowPolicy, TextEncoder, warm_up
from .rewards import Reward
from .schedules import TimestepConvention

log = logging.getLogger(__name__)


def generator(seed: int, *stream) -> torch.Generator:
    """A torch.Generator for (seed, stream...) that is stable across processes (no Python hash())."""
    key = hashlib.sha256(repr((seed, *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


def round_prompts(prompts: list[str], shared: SharedConfig, round_idx: int) -> list[str]:
    """The prompts of a round: consecutive slices of per-epoch seeded permutations. Same seed, same prompts for every method."""
    P, out = shared.prompts_per_round, []
    for pos in range(round_idx * P, (round_idx + 1) * P):
        epoch, i = divmod(pos, len(prompts))
        perm = torch.randperm(len(prompts), generator=generator(shared.seed, "prompts", epoch))
        out.append(prompts[int(perm[i])])
    return out


class PromptNoise:
    """Standard normal noise drawn per prompt of a round, each from its own stream: a process holding any slice of a
    round's prompts draws exactly the noise one process draws for them, so results do not depend on the world size.

    ``noise(shape, dim)`` stacks one ``shape`` block per prompt along ``dim``; every call draws fresh noise.
    """

    def __init__(self, seed: int, stream: str, round_idx: int, prompt_ids: list[int]) -> None:
        self.key, self.prompt_ids, self.calls = (seed, stream, round_idx), list(prompt_ids), 0

    def __call__(self, shape, dim: int = 0) -> torch.Tensor:
        self.calls += 1
        return torch.stack([torch.randn(tuple(shape), generator=generator(*self.key, self.calls, p))
                            for p in self.prompt_ids], dim)


def initial_noise(shared: SharedConfig, round_idx: int, latent_shape, prompt_ids: list[int] | None = None) -> torch.Tensor:
    """(P, G, C, H, W) x_T of a round's prompts (all by default); shared-noise methods take member 0, so it is the
    same x_T for all of them."""
    ids = range(shared.prompts_per_round) if prompt_ids is None else prompt_ids
    return PromptNoise(shared.seed, "x_T", round_idx, ids)((shared.num_generations, *latent_shape))


MODEL_SETTINGS = ("timestep_convention", "precision", "lora")
"""Shared settings that change what a saved policy is or how it runs: recorded with every checkpoint
(``model_settings``) so an evaluation rebuilds the model as it was trained (``apply_model_settings``)."""


def model_settings(shared: SharedConfig, method: Method | None = None) -> dict:
    """The settings of ``MODEL_SETTINGS``; with a method, ``lora`` is the adapter it trains (``Method.lora``)."""
    settings = {k: getattr(shared, k) for k in MODEL_SETTINGS}
    return settings | ({"lora": method.lora(shared)} if method is not None else {})


def apply_model_settings(policy: FlowPolicy, settings: dict) -> FlowPolicy:
    """Timestep convention, compute precision and LoRA adapter (all else frozen) as ``settings`` give them; a key
    that is absent (a checkpoint from before it was recorded) leaves the policy's own value."""
    if "timestep_convention" in settings:
        policy.timestep_convention = TimestepConvention(settings["timestep_convention"])
    if "precision" in settings:
        policy.precision = settings["precision"]
    if settings.get("lora") and not has_lora(policy):  # a policy given with its adapter keeps it
        add_lora(policy, **LORA_PRESETS[settings["lora"]])
    return policy


def trained_meta(method: Method, shared: SharedConfig, rounds: int, variant: str = "default",
                 tier_settings: dict | None = None) -> dict:
    """The sidecar of a saved policy: what eval.evaluate needs to rebuild it (tier and the environment's settings of
    it, ``Tier.settings``; model settings) and to split in- from out-of-domain rewards, and what benchmarks.collect
    needs to place it in a table (method, variant, seed, knobs, cost). Written by the benchmark runner and by
    benchmarks.train alike."""
    return {"tier": shared.model, "tier_settings": dict(tier_settings or {}), "method": method.name, "variant": variant,
            "seed": shared.seed, "rounds": rounds,
            "in_domain": shared.rewards, "settings": model_settings(shared, method),
            "weights": "ema" if method.ema is not None else "live", "knobs": dataclasses.asdict(method.cfg),
            "nfe_per_round": nfe_per_round(method, shared),
            "nfe_per_round_official": nfe_per_round(method, shared, official=True), "shared_digest": shared.digest(),
            "comparable_digest": shared.comparable_digest()}


def prepare(policy: FlowPolicy, shared: SharedConfig, method: Method | None = None) -> FlowPolicy:
    """Make the policy run as the shared settings and the method say (``apply_model_settings``, compiled rollouts,
    gradient checkpointing). The Trainer calls it, before the method takes its KL reference."""
    apply_model_settings(policy, model_settings(shared, method))
    policy.compiled = shared.compile
    if shared.gradient_checkpointing:
        enable_memory_savers(policy, True)
    return policy


class Trainer:
    """Runs any ``Method`` on a policy with the shared settings."""

    def __init__(self, policy: FlowPolicy, text_encoder: TextEncoder, method: Method, rewards: dict[str, Reward],
                 shared: SharedConfig, prompts: list[str], dp: DataParallel | None = None) -> None:
        missing = [m for m in shared.rewards if m not in rewards]
        if missing:
            raise ValueError(f"reward models {missing} are in the shared settings but were not given")
        if not prompts:
            raise ValueError("no training prompts")
        self.policy, self.text, self.method, self.rewards = policy, text_encoder, method, rewards
        self.shared, self.prompts = shared, prompts
        self.dp = dp or DataParallel()
        self.dp.shard(shared.prompts_per_round)  # fails early unless the prompts split evenly over the ranks
        method.validate(shared)
        prepare(policy, shared, method)
        self.compile_s = warm_up(policy, text_encoder(prompts[:1])) if policy.compiled else 0.0
        """Seconds this Trainer spent compiling the rollout forward (0 when off or already compiled in this process)."""
        method.setup(policy)  # before sharding: a full fine-tune's KL reference is a copy of the unsharded policy
        self.dp.wrap(policy, *[m for m in (method.reference,) if m is not None and hasattr(m, "transformer")])
        params = [p for p in policy.parameters() if p.requires_grad]
        o = method.optim
        self.opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.round_idx = 0
        self.optimizer_steps = 0
        """Optimizer steps over the whole run (the EMA schedule's step s)."""
        self.ema = EMA(self._trained(), method.ema) if method.ema is not None else None
        method.attach(self._trained())

    def _trained(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.policy.named_parameters() if p.requires_grad}

    def evaluation_weights(self):
        """Context in which the policy holds the weights a method evaluates and saves: the EMA where the method keeps
        one (Flow-GRPO), else the live weights. Training resumes with the live weights afterwards."""
        return self.ema.applied(self._trained()) if self.ema is not None else contextlib.nullcontext()

    def score(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Scores of every in-domain reward. Non-finite scores are kept (the advantages leave them out); a reward
        with no finite score at all is broken, not noisy, and stops the run."""
        out = {}
        for m in self.shared.rewards:
            r = self.rewards[m](images, prompts)
            if not torch.isfinite(r).any():
                raise FloatingPointError(f"reward {m!r} returned no finite value for any of {len(r)} images")
            out[m] = r
        return out

    def step(self) -> dict:
        """One round. Returns the metrics logged for it."""
        r, shared, policy, dp = self.round_idx, self.shared, self.policy, self.dp
        ids = dp.shard(shared.prompts_per_round)  # this rank's prompts of the round
        round_all = round_prompts(self.prompts, shared, r)
        prompts = [round_all[i] for i in ids]
        cond = self.text(prompts)
        policy.reset_counts()
        if self.method.reference is not None:
            self.method.reference.reset_counts()
        t0 = time.perf_counter()
        with torch.no_grad():
            ro = self.method.rollout(policy, cond, initial_noise(shared, r, policy.latent_shape, ids),
                                     PromptNoise(shared.seed, "sde", r, ids), shared, r)
        t1 = time.perf_counter()
        img_prompts = [prompts[i] for i in ro.image_prompt.tolist()]
        rewards = self.score(ro.images, img_prompts)
        extra = {name: self.score(img, prompts) for name, img in ro.extra_images.items()}
        valid = torch.stack([torch.isfinite(v) for v in rewards.values()]).all(0)
        rewards = {m: torch.where(valid, v, float("nan")) for m, v in rewards.items()}  # an image is dropped whole
        flat = flat_group_share(rewards, ro.image_prompt)  # this process's groups (all of them on one process)
        view, rewards = dp.global_view(ro, rewards)  # the whole round's rewards (one process: ro itself)
        valid = dp.gather(valid)
        skipped = valid.float().mean().item() < shared.min_valid_frac
        t2 = time.perf_counter()
        if skipped:
            log.warning("round %d skipped: %d of %d images have non-finite rewards", r, int((~valid).sum()), len(valid))
            stats, upd = {}, self.update(ro.transitions, cond, [])
        else:  # advantages first: a method's step selection narrows the mask its advantages may set
            stats = self.method.advantages(view, rewards, shared.rewards)
            groups = self.method.update_groups(view, generator(shared.seed, "train", r))
            upd = self.update(ro.transitions, cond, dp.localise(view, ro, groups))
        self.method.end_round(self.optimizer_steps)
        t3 = time.perf_counter()
        metrics = {"round": r, **stats, **upd, "nonfinite_images": int((~valid).sum()), "skipped": int(skipped),
                   "flat_groups": flat}
        for m, v in rewards.items():
            metrics[f"reward/{m}"] = v.nanmean().item()
        for name, sc in extra.items():
            for m, v in sc.items():
                metrics[f"{name}_reward/{m}"] = v.nanmean().item()
        ref = self.method.reference
        metrics |= {"nfe_rollout": policy.calls["rollout"], "nfe_train": policy.calls["train"],
                    "nfe_reference": ref.calls["rollout"] + ref.calls["train"] if ref is not None else 0,
                    "images_scored": len(ro.images) + sum(len(i) for i in ro.extra_images.values()),
                    "time_rollout": t1 - t0, "time_reward": t2 - t1, "time_update": t3 - t2}
        self.round_idx += 1
        return metrics

    def update(self, tr: Transitions, cond: Cond, groups: list[torch.Tensor]) -> dict:
        """One optimizer step per group of rows; within a group the loss is the mean over trained (row, member) pairs of
        their loss (``Method.policy_loss`` + ``Method.extra_loss``) times ``Method.loss_weight``."""
        policy, method = self.policy, self.method
        trained = tr.trained()
        params = [p for p in policy.parameters() if p.requires_grad]
        losses, ratios, clipped, norms, first_dev, nonfinite_steps = [], [], [], [], None, 0
        for rows in groups:
            rows = rows[trained[rows].any(1)]  # rows with no trained member cost nothing
            weight = self.dp.sum(trained[rows].sum())  # over all ranks: the step one process would take
            if weight == 0:
                continue
            self.opt.zero_grad(set_to_none=True)
            chunk_size = self.shared.max_train_batch or max(len(rows), 1)
            chunks = list(rows.split(chunk_size)) if len(rows) else []  # a rank may hold no row of this step
            # FSDP: every forward/backward is a collective, so all ranks make the same number; padding is row 0, weight 0
            pad = self.dp.max(len(chunks)) - len(chunks) if self.dp.sharded else 0
            for i, chunk in enumerate(chunks + [torch.zeros(1, dtype=torch.long)] * pad):
                c = cond[tr.prompt[chunk].tolist()]
                v = policy(tr.x[chunk], tr.sigma[chunk], c)
                per, ratio = method.policy_loss(tr, chunk, v)
                per = per + method.extra_loss(policy, tr, chunk, v, c)
                if (w := method.loss_weight(tr, chunk)) is not None:
                    per = per * w
                mask = trained[chunk] & (i < len(chunks))
                loss = (per * mask).sum() / weight
                loss.backward()
                if i >= len(chunks):
                    continue
                losses.append((per * mask).sum().detach())
                r_sel = ratio.detach()[mask]
                ratios.append(r_sel)
                clipped.append(((r_sel - 1).abs() > method.clip_range).float())
                if not norms:  # before the round's first optimizer step the ratio must be 1
                    first_dev = max(first_dev or 0.0, (r_sel - 1).abs().max().item())
            self.dp.sum_grads(params)
            norm = torch.nn.utils.clip_grad_norm_(params, method.optim.max_grad_norm).item()
            if not math.isfinite(norm):  # a non-finite gradient never reaches the weights
                self.opt.zero_grad(set_to_none=True)
                nonfinite_steps += 1
                continue
            norms.append(norm)
            self.opt.step()
            self.optimizer_steps += 1
            if self.ema is not None:
                self.ema.step(self._trained(), self.optimizer_steps)
        total = trained[torch.cat(groups)].sum().clamp(min=1) if groups else 1
        ratios = torch.cat(ratios) if ratios else torch.ones(1)
        return {
            "loss": (sum(losses) / total).item() if losses else 0.0,
            "ratio_mean": ratios.mean().item(), "ratio_max_dev": (ratios - 1).abs().max().item(),
            "first_ratio_max_dev": first_dev if first_dev is not None else 0.0,
            "clip_frac": torch.cat(clipped).mean().item() if clipped else 0.0,
            "grad_norm": sum(norms) / max(len(norms), 1), "optimizer_steps": len(norms),
            "nonfinite_grad_steps": nonfinite_steps,
        }

    def state_dict(self) -> dict:
        """What continuing exactly needs: the policy's weights (adapters included) and the optimizer (keyed by
        parameter name, so a sharded run's state loads on another world size), the round and optimizer-step counters,
        the weight average if the method keeps one, the method's own state (``Method.state_dict``) if it has any.
        Randomness needs no state: every stream is a function of (seed, stream, round, prompt). The one format on
        disk is ``g2rpo.train_state`` (DCP), which saves and loads exactly this."""
        from torch.distributed.checkpoint.state_dict import get_state_dict  # 0.6 s to import; FSDP's view of both

        model, optim = get_state_dict(self.policy, self.opt)
        state = {"model": model, "optim": optim, "counters": {"round": torch.tensor(self.round_idx),
                                                               "optimizer_steps": torch.tensor(self.optimizer_steps)}}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if method_state := self.method.state_dict():
            state["method"] = method_state
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``. Build the Trainer on the base model first: Flow-GRPO's KL reference is taken
        from the policy the Trainer was built with."""
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.policy, self.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.round_idx = int(state["counters"]["round"])
        self.optimizer_steps = int(state["counters"]["optimizer_steps"])  # only the EMA schedule reads it
        if self.ema is not None:
            self.ema.load_state_dict(state.get("ema", {}))
        if "method" in state:  # absent: the method had no state of its own when it was saved
            self.method.load_state_dict(state["method"])

    def train(self, rounds: int | None = None, log: Callable[[dict], None] | None = None) -> list[dict]:
        history = []
        for _ in range(self.shared.rounds if rounds is None else rounds):
            m = self.step()
            history.append(m)
            if log:
                log(m)
            if not math.isfinite(m["loss"]):
                raise FloatingPointError(f"non-finite loss at round {m['round']}")
        return history
