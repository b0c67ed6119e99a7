"""Rollout performance, measured side by side in one run: ``python -m benchmarks.perf [--json] [--out results/perf.md]``.

- ``speedup_batched_vs_loop``: median G2RPO rollout wall-clock one sample at a time (the official loop's structure,
  ``rollout_mode=reference``) over the batched rollout, on the same prompts and noise; outputs must agree to 1e-5.
- ``mfu``: model FLOPs of the batched rollout (analytic, ``flux_forward_flops``) per second over the peak fp32
  matrix-multiply FLOP/s measured on the same threads between the timed rollouts (median), so both see the same clock.
- ``r2_cost_model``: R² of measured G2RPO round time against the cost accounting (rollout NFE, train NFE, images
  scored and a per-round constant; non-negative least squares) over G x |Lambda| x |M|.
- per-method seconds per round (rollout, reward, update) on the preset's shared settings.
- ``peak_rss_gb``: peak resident memory of the benchmark runner on the preset (all methods, one seed, 2 rounds:
  memory does not grow with rounds or seeds, which run one after another).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from g2rpo.files import write_text
from g2rpo.loop import PromptNoise, Trainer, initial_noise, round_prompts
from g2rpo.models.flux import flux_forward_flops
from g2rpo.presets import PRESETS, preset as get_preset
from g2rpo.registry import METHODS, make_method
from g2rpo.tiers import load_tier

GRIDS = {  # (G, Lambda sets, M sets) of the cost-model fit
    "full": ((4, 8, 12), ((1,), (1, 2), (1, 2, 3)), ((0, 1), (0, 1, 2, 3), tuple(range(8)))),
    "quick": ((2, 3), ((1,), (1, 2)), ((0,), (0, 1))),
}


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine string."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def peak_matmul_flops(sizes=(512, 1024, 2048), reps: int = 5) -> float:
    """Best fp32 FLOP/s of square torch.mm over a few sizes on the current threads."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
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
    """G2RPO rollout, batched vs the one-sample loop: ``reps`` interleaved pairs after a warm-up, medians of both."""
    shared = p.shared
    prompts = round_prompts(tier.train_prompts, shared, 0)
    policy = tier.make_policy().eval()
    cond, noise = tier.text(prompts), initial_noise(shared, 0, policy.latent_shape)
    modes = ("batched", "reference")
    methods = {mode: make_method("g2rpo", p.knobs, rollout_mode=mode) for mode in modes}
    secs: dict[str, list[float]] = {mode: [] for mode in modes}
    rows, out, peaks = {}, {}, []
    with torch.no_grad():
        for rep in range(reps + 1):
            peaks.append(peak_matmul_flops())  # beside the rollouts: sustained load lowers the clock of these CPUs
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
    flops = rows["batched"] * flux_forward_flops(policy.transformer.config, policy.img_ids.shape[0], cond.tokens.shape[1])
    tp = forward_throughput(policy, cond)
    # if the loop ran at the batch-1 rate and every batched call at the best batched rate, nothing else costing time:
    bound = (rows["reference"] / tp[1]) / (rows["batched"] / max(v for k, v in tp.items() if k > 1))
    return {"forward_rows_per_s": tp, "speedup_bound_from_throughput": bound, "peak_gflops": float(np.median(peaks)) / 1e9,
            "rollout_s_batched": sec["batched"], "rollout_s_loop": sec["reference"], "rollout_reps": reps,
            "speedup_batched_vs_loop": sec["reference"] / sec["batched"], "max_abs_diff": diff,
            "rollout_rows_batched": rows["batched"], "rollout_rows_loop": rows["reference"],
            "rollout_gflop": flops / 1e9, "rollout_gflops_per_s": flops / sec["batched"] / 1e9}


def round_times(tier, p, method: str, rounds: int = 2, num_generations: int | None = None, **knobs) -> dict:
    """Seconds of the last of ``rounds`` rounds (the first warms up) and the method's cost per round."""
    shared = dataclasses.replace(p.shared, num_generations=num_generations or p.shared.num_generations)
    m = make_method(method, p.knobs, **knobs)
    trainer = Trainer(tier.make_policy(), tier.text, m, tier.rewards, shared, tier.train_prompts)
    for _ in range(rounds):
        metrics = trainer.step()
    c, P = m.cost(shared), shared.prompts_per_round
    return {"rollout_s": metrics["time_rollout"], "reward_s": metrics["time_reward"], "update_s": metrics["time_update"],
            "round_s": metrics["time_rollout"] + metrics["time_reward"] + metrics["time_update"],
            "nfe_rollout": P * c.nfe_rollout, "nfe_train": P * (c.nfe_train + c.nfe_reference), "images": P * c.images_scored}


def cost_model_fit(tier, p, grid) -> dict:
    gs, lams, ms = grid
    points = []
    for g, lam, ks in itertools.product(gs, lams, ms):
        t = round_times(tier, p, "g2rpo", rounds=1, num_generations=g, granular_list=lam, eta_step_list=ks)
        points.append({"G": g, "granular_list": lam, "eta_step_list": ks} | t)
    X = np.array([[q["nfe_rollout"], q["nfe_train"], q["images"], 1.0] for q in points])
    y = np.array([q["round_s"] for q in points])
    from scipy.optimize import nnls

    coef, _ = nnls(X, y)  # costs per unit cannot be negative; plain least squares trades them off when collinear
    r2 = 1 - ((y - X @ coef) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"r2_cost_model": float(r2), "cost_model_s_per_unit": dict(zip(["rollout_nfe", "train_nfe", "image", "round"],
                                                                         map(float, coef))), "cost_model_points": points}


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
    m = res["methods"]
    curve = ", ".join(f"{b}: {v:.0f}" for b, v in res["forward_rows_per_s"].items())
    lines = ["# Rollout performance", "", "Made by:", "", "```bash", command, "```", "",
             f"{res['machine']}; torch {res['torch']}, {res['threads']} threads; preset `{res['preset']}`. "
             "All numbers measured in this one run, side by side.", "",
             "| metric | value | target |", "|---|---|---|",
             f"| speedup_batched_vs_loop (G²RPO rollout, one sample at a time / batched) | {res['speedup_batched_vs_loop']:.2f}"
             f" (medians of {res['rollout_reps']} interleaved runs: {res['rollout_s_loop']:.2f} s / {res['rollout_s_batched']:.2f} s; max abs diff {res['max_abs_diff']:.1e}) | ≥ 3 |",
             f"| speedup bound from forward throughput alone (rows/s by batch size: {curve}) "
             f"| {res['speedup_bound_from_throughput']:.2f} | |",
             f"| mfu (rollout model FLOP/s ÷ peak fp32 matmul FLOP/s) | {res['mfu']:.3f} ({res['rollout_gflops_per_s']:.1f} ÷ "
             f"{res['peak_gflops']:.1f} GFLOP/s) | ≥ 0.5 |",
             f"| r2_cost_model (round time ~ rollout NFE + train NFE + images, {len(res['cost_model_points'])} configs) "
             f"| {res['r2_cost_model']:.3f} | ≥ 0.95 |",
             f"| peak_rss_gb (benchmark runner, all methods) | {res['peak_rss_gb']:.2f} | ≤ 4 |", "",
             "Seconds per round (second round of each method; preset shared settings):", "",
             "| method | rollout s | reward s | update s | round s | rollout NFE | train NFE | images |", "|---|---|---|---|---|---|---|---|"]
    for name, t in m.items():
        lines.append(f"| {name} | {t['rollout_s']:.2f} | {t['reward_s']:.2f} | {t['update_s']:.2f} | {t['round_s']:.2f} | "
                     f"{t['nfe_rollout']} | {t['nfe_train']} | {t['images']} |")
    c = res["cost_model_s_per_unit"]
    lines += ["", f"Cost model fit (seconds): {c['rollout_nfe'] * 1e3:.2f} ms per rollout NFE, {c['train_nfe'] * 1e3:.2f} ms per "
              f"train NFE, {c['image'] * 1e3:.2f} ms per image scored, {c['round']:.2f} s per round."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="pocket", help=f"one of {', '.join(sorted(PRESETS))}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timed pairs of loop and batched rollouts (medians are reported)")
    ap.add_argument("--quick", action="store_true", help="a small cost-model grid (for tests)")
    ap.add_argument("--skip-rss", action="store_true", help="do not run the benchmark runner for peak RSS")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--out", type=Path, help="also write the markdown table here, e.g. results/perf.md")
    a = ap.parse_args(argv)
    try:
        p = get_preset(a.preset)
        if a.threads < 1 or a.reps < 1:
            raise ValueError("--threads and --reps must be >= 1")
        tier = load_tier(p.shared.model)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    command = "python -m benchmarks.perf " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    res = {"preset": a.preset, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": cpu_name()}
    res |= rollout_speed(tier, p, a.reps)
    res["mfu"] = res["rollout_gflops_per_s"] / res["peak_gflops"]
    res["methods"] = {m: round_times(tier, p, m) for m in METHODS}
    res |= cost_model_fit(tier, p, GRIDS["quick" if a.quick else "full"])
    res["peak_rss_gb"] = float("nan") if a.skip_rss else runner_peak_rss(a.preset, a.threads)
    text = markdown(res, command)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(a.out, text)
    print(json.dumps(res, default=str) if a.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
