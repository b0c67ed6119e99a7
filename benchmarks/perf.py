"""Rollout and round performance, measured side by side in one run:
``python -m benchmarks.perf [--json] [--out results/perf.md]`` (figure: ``results/perf.png`` beside ``--out``).

- ``speedup_optimized_vs_eager``: a pocket G2RPO round (rollout, rewards, update) with the speed options off (eager
  forwards, every completion chain on its own: the code before them) over on (compiled rollout forwards, shared
  completion prefixes: the preset's defaults); the two trainers step in turn from the same base model and seed, so both
  see the same machine. Equal results are checked beside it: the images of one rollout from the same weights, the mean
  in-domain reward of every round, the PPO ratio at the first update. ``speedup_optimized_bf16_vs_eager`` adds the
  bf16 completions (``completion_dtype='bf16'``, off by default: it moves rewards by bf16 rounding).
- ``mfu``: model FLOPs of the optimized rollout (analytic, ``flux_forward_flops``, real rows only: padding is
  overhead) per second over the peak fp32 matmul FLOP/s measured between the timed rounds (median), so both see the
  same clock; ``mfu_eager`` the same for the eager round; the bf16 peak is measured too.
- ``speedup_batched_vs_loop``: the eager G2RPO rollout one sample at a time (the official loop's structure,
  ``rollout_mode=reference``) over the batched rollout, on the same prompts and noise; outputs must agree to 1e-5.
- ``time_to_signal``: per method, the training seconds, model evaluations and rounds until its fixed-set held-out
  reward first exceeds the base model's by more than the curve's noise floor, read from the benchmark's
  ``time_to_signal.csv`` (``results/<preset>/``; made by ``python -m benchmarks.run``), not re-measured here.
- ``r2_cost_model``: R² of measured G2RPO round time against the cost accounting (rollout NFE, train NFE, images
  scored and a per-round constant; non-negative least squares) over G, N, |M| and |Lambda|, each varied around the
  preset; the figure plots measured and predicted round times against each.
- ``paper_round_s_h200``: the paper preset's round time on H200-class GPUs as arithmetic (FLOPs / assumed MFU x bf16
  peak), not a measurement.
- per-method seconds per round on the preset; ``peak_rss_gb`` of the benchmark runner on the preset (all methods,
  one seed, 2 rounds: memory does not grow with rounds or seeds, which run one after another).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from g2rpo.files import atomic, write_text
from g2rpo.flags import FlagError, at_least, check_writable
from g2rpo.loop import PromptNoise, Trainer, initial_noise, round_prompts
from g2rpo.models.flux import flux_forward_flops
from g2rpo.presets import PRESETS, preset as get_preset
from g2rpo.registry import METHODS, make_method
from g2rpo.tiers import load_tier

ROOT = Path(__file__).resolve().parents[1]

GRIDS = {  # values of G, N, |M| (M = 0..|M|-1) and |Lambda| (Lambda = 1..|Lambda|), each varied with the others at the preset's
    "full": {"G": (4, 8, 12, 16), "N": (6, 10, 14, 20), "M": (1, 2, 4, 8), "L": (1, 2, 3, 4)},
    "quick": {"G": (2, 3), "N": (4,), "M": (1, 2), "L": (1, 2)},
}
H200_BF16_PEAK = 989e12
"""Dense bf16 tensor-core FLOP/s of an H100/H200 SXM (the vendor's figure without sparsity)."""
ASSUMED_MFU = 0.4
"""Model FLOP utilisation assumed for the paper-tier arithmetic (large transformer training typically reaches 0.3-0.5)."""


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine string."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def peak_matmul_flops(sizes=(512, 1024, 2048), reps: int = 5, dtype=torch.float32) -> float:
    """Best FLOP/s of square torch.mm in ``dtype`` over a few sizes on the current threads."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


BATCHES = (1, 8, 32, 64, 128)  # forward-throughput curve; the rollout's calls are 2..P*|M|*|Lambda|*G rows


def forward_throughput(policy, cond, batches=BATCHES, reps: int = 3, rows: int = 256) -> dict[int, float]:
    """Median rows per second of plain no-grad forwards per batch size (same prompt, mid-schedule sigma).

    Batch sizes are interleaved within each repetition, so a slow spell of a shared machine hits all of them."""
    runs: dict[int, list[float]] = {b: [] for b in batches}
    with torch.no_grad():
        for _ in range(reps):
            for b in batches:
                x, c, s = torch.randn(b, *policy.latent_shape), cond[[0] * b], torch.full((b,), 0.5)
                policy(x, s, c)
                n = max(1, rows // b)
                t = time.perf_counter()
                for _ in range(n):
                    policy(x, s, c)
                runs[b].append(b * n / (time.perf_counter() - t))
    return {b: float(np.median(r)) for b, r in runs.items()}


def rollout_speed(tier, p, reps: int) -> dict:
    """Eager G2RPO rollout, batched vs the one-sample loop: ``reps`` interleaved pairs after a warm-up, medians of both."""
    shared = p.shared
    prompts = round_prompts(tier.train_prompts, shared, 0)
    policy = tier.make_policy().eval()
    cond, noise = tier.text(prompts), initial_noise(shared, 0, policy.latent_shape)
    modes = ("batched", "reference")
    methods = {mode: make_method("g2rpo", p.knobs, rollout_mode=mode) for mode in modes}
    secs: dict[str, list[float]] = {mode: [] for mode in modes}
    rows, out = {}, {}
    with torch.no_grad():
        for rep in range(reps + 1):
            for mode in modes:
                policy.reset_counts()
                t = time.perf_counter()
                out[mode] = methods[mode].rollout(policy, cond, noise, PromptNoise(shared.seed, "sde", 0, range(len(prompts))), shared)
                if rep:  # the first pair warms up
                    secs[mode].append(time.perf_counter() - t)
                rows[mode] = policy.calls["rollout"]
    a, b = out["batched"], out["reference"]
    diff = max((a.images - b.images).abs().max().item(), (a.transitions.x_next - b.transitions.x_next).abs().max().item(),
               (a.transitions.log_prob_old - b.transitions.log_prob_old).abs().max().item())
    sec = {mode: float(np.median(s)) for mode, s in secs.items()}
    tp = forward_throughput(policy, cond)
    # if the loop ran at the batch-1 rate and every batched call at the best batched rate, nothing else costing time:
    bound = (rows["reference"] / tp[1]) / (rows["batched"] / max(v for k, v in tp.items() if k > 1))
    return {"forward_rows_per_s": tp, "speedup_bound_from_throughput": bound,
            "rollout_s_batched": sec["batched"], "rollout_s_loop": sec["reference"], "rollout_reps": reps,
            "speedup_batched_vs_loop": sec["reference"] / sec["batched"], "max_abs_diff": diff,
            "rollout_rows_batched": rows["batched"], "rollout_rows_loop": rows["reference"]}


def round_times(tier, p, method: str, rounds: int = 4, **over) -> dict:
    """Median seconds of rounds 2..``rounds`` (the first warms up; a median, as one slow spell of a shared machine can
    double a single round) and the method's cost per round; ``over`` holds shared settings (``num_generations``,
    ``num_steps``) and method knobs."""
    fields = {k: over.pop(k) for k in ("num_generations", "num_steps") if k in over}
    shared = dataclasses.replace(p.shared, **fields)
    m = make_method(method, p.knobs, **over)
    trainer = Trainer(tier.make_policy(), tier.text, m, tier.rewards, shared, tier.train_prompts)
    timed = [trainer.step() for _ in range(rounds)][1:]
    t = {k: float(np.median([x[f"time_{k}"] for x in timed])) for k in ("rollout", "reward", "update")}
    c, P = m.cost(shared), shared.prompts_per_round
    return {"rollout_s": t["rollout"], "reward_s": t["reward"], "update_s": t["update"],
            "round_s": float(np.median([x["time_rollout"] + x["time_reward"] + x["time_update"] for x in timed])),
            "nfe_rollout": P * c.nfe_rollout, "nfe_train": P * (c.nfe_train + c.nfe_reference), "images": P * c.images_scored}


VARIANTS = {  # name: (compile, G2RPO knobs)
    "eager": (False, {"shared_prefix": False}),
    "optimized": (True, {}),
    "optimized_bf16": (True, {"completion_dtype": "bf16"}),
}


def optimized_vs_eager(tier, p, reps: int) -> dict:
    """G2RPO rounds of the three ``VARIANTS``, one trainer each from the same base model and seed, stepped in turn
    (``reps`` timed rounds after one warm-up round; medians), with the fp32 and bf16 matmul peaks measured between
    rounds; plus each variant's mean in-domain reward per round and the PPO ratio's largest deviation from 1 at the
    first update of every round."""
    trainers, secs, rollout_s, rows, reward, first_dev, peaks, peaks_bf16 = {}, {}, {}, {}, {}, {}, [], []
    rew = next(iter(p.shared.rewards))
    for name, (comp, knobs) in VARIANTS.items():
        shared = dataclasses.replace(p.shared, compile=comp)
        trainers[name] = Trainer(tier.make_policy(), tier.text, make_method("g2rpo", p.knobs, **knobs), tier.rewards,
                                 shared, tier.train_prompts)
        secs[name], rollout_s[name], reward[name], first_dev[name] = [], [], [], []
    for rep in range(reps + 1):
        peaks.append(peak_matmul_flops())
        peaks_bf16.append(peak_matmul_flops(dtype=torch.bfloat16))
        for name, t in trainers.items():
            m = t.step()
            reward[name].append(m[f"reward/{rew}"])
            first_dev[name].append(m["first_ratio_max_dev"])
            rows[name] = m["nfe_rollout"]
            if rep:  # the first round warms up
                secs[name].append(m["time_rollout"] + m["time_reward"] + m["time_update"])
                rollout_s[name].append(m["time_rollout"])
    med = {n: float(np.median(v)) for n, v in secs.items()}
    roll = {n: float(np.median(v)) for n, v in rollout_s.items()}
    policy = trainers["eager"].policy
    flops_row = flux_forward_flops(policy.transformer.config, policy.img_ids.shape[0], tier.text(tier.train_prompts[:1]).tokens.shape[1])
    peak, peak_bf16 = float(np.median(peaks)), float(np.median(peaks_bf16))
    gflops = {n: rows[n] * flops_row / roll[n] / 1e9 for n in VARIANTS}
    return {"round_s": med, "rollout_s": roll, "rollout_rows": rows, "round_reps": reps,
            "speedup_optimized_vs_eager": med["eager"] / med["optimized"],
            "speedup_optimized_bf16_vs_eager": med["eager"] / med["optimized_bf16"],
            "peak_gflops": peak / 1e9, "peak_gflops_bf16": peak_bf16 / 1e9, "rollout_gflops_per_s": gflops,
            "mfu": gflops["optimized"] * 1e9 / peak, "mfu_eager": gflops["eager"] * 1e9 / peak,
            "mfu_optimized_bf16_vs_bf16_peak": gflops["optimized_bf16"] * 1e9 / peak_bf16,
            "round_rewards": reward, "first_ratio_max_dev": {n: max(v) for n, v in first_dev.items()},
            "round_reward_max_abs_diff": {n: max(abs(a - b) for a, b in zip(reward[n], reward["eager"])) for n in VARIANTS}}


def same_samples(tier, p) -> dict:
    """One G2RPO rollout of each variant from the same base weights, prompts and noise: the largest difference of
    their images and of their in-domain rewards per image from the eager rollout's."""
    shared = p.shared
    prompts = round_prompts(tier.train_prompts, shared, 0)
    cond, rew = tier.text(prompts), tier.rewards[next(iter(shared.rewards))]
    policy = tier.make_policy().eval()
    out = {}
    for name, (comp, knobs) in VARIANTS.items():
        policy.compiled = comp
        with torch.no_grad():
            ro = make_method("g2rpo", p.knobs, **knobs).rollout(
                policy, cond, initial_noise(shared, 0, policy.latent_shape), PromptNoise(shared.seed, "sde", 0, range(len(prompts))),
                shared)
        out[name] = ro.images, rew(ro.images, [prompts[i] for i in ro.image_prompt.tolist()])
    img0, r0 = out["eager"]
    return {"image_max_abs_diff": {n: float((img - img0).abs().max()) for n, (img, _) in out.items() if n != "eager"},
            "reward_max_abs_diff_per_image": {n: float((r - r0).abs().max()) for n, (_, r) in out.items() if n != "eager"}}


def cost_model_fit(tier, p, grid: dict) -> dict:
    """Round times of G2RPO with G, N, |M| and |Lambda| each varied around the preset (the others at the preset's;
    N = 6 holds at most M = 0..4), and a non-negative least-squares fit of them on the cost accounting."""
    cfg0 = make_method("g2rpo", p.knobs).cfg
    base = {"G": p.shared.num_generations, "N": p.shared.num_steps, "M": len(cfg0.eta_step_list), "L": len(cfg0.granular_list)}
    configs = list(dict.fromkeys(tuple(sorted((base | {axis: v}).items())) for axis, vals in grid.items() for v in vals))
    points = []
    for cfg in map(dict, configs):
        m_steps = min(cfg["M"], cfg["N"] - 1)
        t = round_times(tier, p, "g2rpo", num_generations=cfg["G"], num_steps=cfg["N"],
                        eta_step_list=tuple(range(m_steps)), granular_list=tuple(range(1, cfg["L"] + 1)))
        points.append(cfg | {"M": m_steps} | t)
    X = np.array([[q["nfe_rollout"], q["nfe_train"], q["images"], 1.0] for q in points])
    y = np.array([q["round_s"] for q in points])
    from scipy.optimize import nnls

    coef, _ = nnls(X, y)  # costs per unit cannot be negative; plain least squares trades them off when collinear
    for q, pred in zip(points, X @ coef):
        q["predicted_s"] = float(pred)
    r2 = 1 - ((y - X @ coef) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"r2_cost_model": float(r2), "cost_model_base": base, "cost_model_points": points,
            "cost_model_s_per_unit": dict(zip(["rollout_nfe", "train_nfe", "image", "round"], map(float, coef)))}


def cost_plot(res: dict, path: Path) -> Path:
    """Measured and predicted G2RPO round time against each of G, N, |M|, |Lambda| (the others at the preset's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, pts = res["cost_model_base"], res["cost_model_points"]
    labels = {"G": "G (images per prompt)", "N": "N (sampling steps)", "M": "|M| (noise-injection steps)",
              "L": "|Λ| (granularities)"}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, axis in zip(axes, labels):
        line = sorted((q for q in pts if all(q[k] == base[k] for k in base if k != axis)), key=lambda q: q[axis])
        xs = [q[axis] for q in line]
        ax.plot(xs, [q["round_s"] for q in line], "o", label="measured")
        ax.plot(xs, [q["predicted_s"] for q in line], "x--", label="cost model")
        ax.set(xlabel=labels[axis])
    axes[0].set_ylabel("seconds per G²RPO round")
    axes[0].legend()
    fig.suptitle(f"Round time vs the cost accounting (R² {res['r2_cost_model']:.3f}; {res['threads']} threads, "
                 f"{res['machine']})")
    fig.tight_layout()
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def time_to_signal(path: Path) -> dict:
    """Per method, the benchmark's time to signal (``benchmarks.table.time_to_signal_table``), or {} without it."""
    if not path.exists():
        return {}
    native = lambda v: None if v != v else v.item() if hasattr(v, "item") else v  # noqa: E731  (NaN: never reached)
    rows = pd.read_csv(path).to_dict("records")
    if any(k not in r for r in rows for k in ("method", "wall_s", "seeds", "seeds_reached")):
        raise ValueError(f"{path} is not a time_to_signal.csv of benchmarks.table (columns method, wall_s, seeds, ...)")
    return {r["method"]: {k: native(v) for k, v in r.items() if k != "method"} for r in rows}


def paper_h200() -> dict:
    """The paper preset's round on H200-class GPUs as arithmetic: analytic FLOPs of FLUX.1-dev (720 px: 45 x 45 = 2025
    image tokens after 2x2 packing; 512 T5 tokens) per sample evaluation, a training forward+backward as 3 forwards,
    over ASSUMED_MFU x H200_BF16_PEAK per GPU on the preset's 16 GPUs (one prompt each)."""
    flux = SimpleNamespace(num_attention_heads=24, attention_head_dim=128, num_layers=19, num_single_layers=38,
                           in_channels=64, out_channels=None, patch_size=1, joint_attention_dim=4096,
                           pooled_projection_dim=768, guidance_embeds=True)
    per_eval = flux_forward_flops(flux, 2025, 512)
    p = get_preset("paper")
    c, P = make_method("g2rpo", p.knobs).cost(p.shared), p.shared.prompts_per_round
    flops = P * per_eval * (c.nfe_rollout + 3 * (c.nfe_train + c.nfe_reference))
    gpus = P
    return {"paper_flops_per_eval": per_eval, "paper_round_flops": flops, "paper_gpus": gpus,
            "paper_round_s_h200": flops / (gpus * ASSUMED_MFU * H200_BF16_PEAK), "paper_assumed_mfu": ASSUMED_MFU,
            "paper_nfe_rollout_per_prompt": c.nfe_rollout, "paper_nfe_train_per_prompt": c.nfe_train}


RSS_PROBE = ("import resource, sys; from benchmarks.run import main; rc = main(sys.argv[1:]); "
             "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def runner_peak_rss(preset_name: str, threads: int) -> float:
    """Peak RSS (GB) of ``benchmarks.run`` on the preset, all methods, one seed, two rounds, tables included.

    The child reports its own peak: RUSAGE_CHILDREN would also count the pages a fork shares with this process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", RSS_PROBE, "--preset", preset_name, "--seeds", "1", "--rounds", "2",
               "--threads", str(threads), "--out", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"benchmark run for peak RSS failed: {r.stderr.strip().splitlines()[-1]}")
    return int(r.stdout.split("peak_rss_kib")[-1]) / 2**20


def markdown(res: dict, command: str) -> str:
    m, v = res["methods"], res
    curve = ", ".join(f"{b}: {x:.0f}" for b, x in res["forward_rows_per_s"].items())
    rs, ro = v["round_s"], v["rollout_s"]
    lines = ["# Rollout and round performance", "", "Made by:", "", "```bash", command, "```", "",
             f"{res['machine']}; torch {res['torch']}, {res['threads']} threads; preset `{res['preset']}`. "
             "All numbers measured in this one run, side by side (figure: `perf.png`).", "",
             "| metric | value | target |", "|---|---|---|",
             f"| speedup_optimized_vs_eager (G²RPO round: eager, every completion chain on its own / compiled rollout "
             f"forwards, shared completion prefixes) | {v['speedup_optimized_vs_eager']:.2f} (medians of {v['round_reps']} "
             f"rounds in turn: {rs['eager']:.2f} s / {rs['optimized']:.2f} s; rollout {ro['eager']:.2f} s / "
             f"{ro['optimized']:.2f} s, {v['rollout_rows']['eager']} / {v['rollout_rows']['optimized']} model rows) | ≥ 2 |",
             f"| equal results, optimized vs eager | images of one rollout from the same weights within "
             f"{v['image_max_abs_diff']['optimized']:.1e}, rewards per image within "
             f"{v['reward_max_abs_diff_per_image']['optimized']:.1e}; mean reward of each of the {v['round_reps'] + 1} "
             f"rounds within {v['round_reward_max_abs_diff']['optimized']:.1e}; PPO ratio at the first update within "
             f"{v['first_ratio_max_dev']['optimized']:.1e} of 1 (eager {v['first_ratio_max_dev']['eager']:.1e}) | "
             "samples within 1e-4, ratio within 1e-6 |",
             f"| speedup_optimized_bf16_vs_eager (as optimized, plus bf16 completions; off by default) | "
             f"{v['speedup_optimized_bf16_vs_eager']:.2f} ({rs['optimized_bf16']:.2f} s per round; images within "
             f"{v['image_max_abs_diff']['optimized_bf16']:.2f}, rewards per image within "
             f"{v['reward_max_abs_diff_per_image']['optimized_bf16']:.3f}; ratio at the first update within "
             f"{v['first_ratio_max_dev']['optimized_bf16']:.1e} of 1) | |",
             f"| mfu (optimized rollout: model FLOP/s of its real rows ÷ peak fp32 matmul FLOP/s) | {v['mfu']:.3f} "
             f"({v['rollout_gflops_per_s']['optimized']:.1f} ÷ {v['peak_gflops']:.1f} GFLOP/s; eager "
             f"{v['mfu_eager']:.3f}) | ≥ 0.5 |",
             f"| mfu of the bf16-completion rollout ÷ peak bf16 matmul FLOP/s | "
             f"{v['mfu_optimized_bf16_vs_bf16_peak']:.3f} ({v['rollout_gflops_per_s']['optimized_bf16']:.1f} ÷ "
             f"{v['peak_gflops_bf16']:.1f} GFLOP/s) | |",
             f"| speedup_batched_vs_loop (eager G²RPO rollout, one sample at a time / batched) | "
             f"{res['speedup_batched_vs_loop']:.2f} (medians of {res['rollout_reps']} interleaved runs: "
             f"{res['rollout_s_loop']:.2f} s / {res['rollout_s_batched']:.2f} s; max abs diff {res['max_abs_diff']:.1e}) | ≥ 3 |",
             f"| speedup bound from eager forward throughput alone (rows/s by batch size: {curve}) "
             f"| {res['speedup_bound_from_throughput']:.2f} | |",
             f"| r2_cost_model (round time ~ rollout NFE + train NFE + images, {len(res['cost_model_points'])} configs) "
             f"| {res['r2_cost_model']:.3f} | ≥ 0.95 |",
             f"| peak_rss_gb (benchmark runner, all methods) | {res['peak_rss_gb']:.2f} | ≤ 4 |", ""]
    lines += ["## Time to signal", ""]
    if res["time_to_signal"]:
        src = res["time_to_signal_source"]
        lines += [f"From `{src}` (the benchmark `python -m benchmarks.run --preset {res['preset']}`; its README gives "
                  "its seeds and commit): training seconds, model evaluations and rounds until the fixed-set held-out "
                  "reward first exceeds the base model's by more than the curve's noise floor; mean ± 95% t-interval "
                  "over the seeds that got there.", "",
                  "| method | training s | NFE | rounds | seeds reaching it |", "|---|---|---|---|---|"]
        for name, t in res["time_to_signal"].items():
            if t["seeds_reached"]:
                lines.append(f"| {name} | {t['wall_s']:.1f} ± {t['wall_s_half_ci']:.1f} | {t['cum_nfe']:.0f} ± "
                             f"{t['cum_nfe_half_ci']:.0f} | {t['round']:.1f} ± {t['round_half_ci']:.1f} | "
                             f"{t['seeds_reached']} of {t['seeds']} |")
            else:
                lines.append(f"| {name} | – | – | – | 0 of {t['seeds']} |")
    else:
        lines.append(f"No `{res['time_to_signal_source']}`: run `python -m benchmarks.run --preset {res['preset']}` first.")
    lines += ["", "## Seconds per round", "", "Median of rounds 2-4 of each method on the preset's shared settings:", "",
              "| method | rollout s | reward s | update s | round s | rollout NFE | train NFE | images |",
              "|---|---|---|---|---|---|---|---|"]
    for name, t in m.items():
        lines.append(f"| {name} | {t['rollout_s']:.2f} | {t['reward_s']:.2f} | {t['update_s']:.2f} | {t['round_s']:.2f} | "
                     f"{t['nfe_rollout']} | {t['nfe_train']} | {t['images']} |")
    c = res["cost_model_s_per_unit"]
    lines += ["", "## How cost grows", "",
              f"Cost model fit (seconds): {c['rollout_nfe'] * 1e3:.2f} ms per rollout NFE, {c['train_nfe'] * 1e3:.2f} ms per "
              f"train NFE, {c['image'] * 1e3:.2f} ms per image scored, {c['round']:.2f} s per round; R² "
              f"{res['r2_cost_model']:.3f} over G, N, |M|, |Λ| each varied around "
              f"{', '.join(f'{k} = {x}' for k, x in res['cost_model_base'].items())} (`perf.png`).", "",
              "| G | N | \\|M\\| | \\|Λ\\| | rollout NFE | train NFE | images | measured s | predicted s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for q in res["cost_model_points"]:
        lines.append(f"| {q['G']} | {q['N']} | {q['M']} | {q['L']} | {q['nfe_rollout']} | {q['nfe_train']} | "
                     f"{q['images']} | {q['round_s']:.2f} | {q['predicted_s']:.2f} |")
    lines += ["", f"Paper preset on H200-class GPUs (arithmetic, not measured): FLUX.1-dev at 720 px costs "
              f"{res['paper_flops_per_eval'] / 1e12:.2f} TFLOP per sample evaluation (analytic; 2025 image + 512 text "
              f"tokens); a G²RPO round ({res['paper_nfe_rollout_per_prompt']} rollout + {res['paper_nfe_train_per_prompt']} "
              f"training evaluations per prompt, a training one as 3 forwards, 16 prompts) is "
              f"{res['paper_round_flops'] / 1e15:.0f} PFLOP; on {res['paper_gpus']} GPUs at an assumed MFU of "
              f"{res['paper_assumed_mfu']} of {H200_BF16_PEAK / 1e12:.0f} TFLOP/s bf16 that is "
              f"{res['paper_round_s_h200']:.0f} s per round, {res['paper_round_s_h200'] * 300 / 3600:.1f} h for 300 rounds "
              "(rewards, text encoding and communication not included)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/performance.md")
    ap.add_argument("--preset", default="pocket", help=f"one of {', '.join(sorted(PRESETS))}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timed rounds / rollout pairs per comparison (medians are reported)")
    ap.add_argument("--quick", action="store_true", help="a small cost-model grid (for tests)")
    ap.add_argument("--skip-rss", action="store_true", help="do not run the benchmark runner for peak RSS")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--signal", type=Path, help="the benchmark's time_to_signal.csv (default results/<preset>/)")
    ap.add_argument("--out", type=Path, help="also write the markdown here, e.g. results/perf.md (and the figure as .png)")
    a = ap.parse_args(argv)
    try:
        p = get_preset(a.preset)
        at_least(("--threads", a.threads, 1), ("--reps", a.reps, 1))
        if a.signal and not a.signal.is_file():  # the default may be missing (no benchmark run yet), a given file not
            raise FlagError(f"--signal {a.signal} does not exist")
        signal = a.signal or ROOT / "results" / a.preset / "time_to_signal.csv"
        ttsignal = time_to_signal(signal)  # read before minutes of measuring: a broken file fails now
        if a.out:
            check_writable(a.out, "--out", file=True)
        tier = load_tier(p.shared.model, p.shared.skills)
    except (KeyError, ValueError, OSError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    command = "python -m benchmarks.perf " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    res = {"preset": a.preset, "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": cpu_name()}
    res |= optimized_vs_eager(tier, p, a.reps)
    res |= same_samples(tier, p)
    res |= rollout_speed(tier, p, a.reps)
    res["methods"] = {m: round_times(tier, p, m) for m in METHODS}
    res |= cost_model_fit(tier, p, GRIDS["quick" if a.quick else "full"])
    shown = signal.resolve().relative_to(ROOT) if signal.resolve().is_relative_to(ROOT) else signal
    res["time_to_signal"], res["time_to_signal_source"] = ttsignal, str(shown)
    res |= paper_h200()
    res["peak_rss_gb"] = float("nan") if a.skip_rss else runner_peak_rss(a.preset, a.threads)
    text = markdown(res, command)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(a.out, text)
        res["figure"] = str(cost_plot(res, a.out.with_suffix(".png")))
    print(json.dumps(res, default=str) if a.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
