"""Executes a plan: one MLflow parent run per invocation, one child run per (method, variant, seed)."""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import torch
from tqdm import tqdm

from eval.generate import generate, score
from g2rpo.loop import Trainer
from g2rpo.presets import Preset
from g2rpo.tiers import Tier

from .plan import BASE, RunSpec, nfe_per_round
from .tracking import flatten, git_commit


class RunFailed(RuntimeError):
    """A training or evaluation run failed; the runs finished before it stay in the store."""


def eval_steps(p: Preset) -> int:
    return p.eval.steps or p.shared.num_steps


def sigmas_for(p: Preset, steps: int) -> torch.Tensor:
    return dataclasses.replace(p.shared, num_steps=steps).sigmas()


def save_row(images: torch.Tensor, path: Path) -> None:
    """Images side by side as one PNG at native resolution (the table step labels and enlarges them)."""
    from PIL import Image

    row = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)  # (B, H, W, 3)
    Image.fromarray(torch.cat(list(row), dim=1).numpy()).save(path)


def evaluate(policy, p: Preset, tier: Tier, extra_steps: list[int], tmp: Path) -> dict[str, float]:
    """Score the held-out prompts at the main and extra step counts; per-prompt CSVs and a sample row as artifacts."""
    prompts = tier.eval_prompts[: p.eval.num_prompts or None]
    metrics = {}
    for steps in [eval_steps(p)] + [s for s in extra_steps if s != eval_steps(p)]:
        images = generate(policy, tier.text, prompts, sigmas_for(p, steps), seed=p.eval.seed)
        scores = score(images, prompts, tier.rewards)
        df = pd.DataFrame({"prompt_index": range(len(prompts)), "prompt": prompts} | {k: v.numpy() for k, v in scores.items()})
        df.to_csv(tmp / f"scores_{steps}steps.csv", index=False)
        mlflow.log_artifact(str(tmp / f"scores_{steps}steps.csv"), "eval")
        main = steps == eval_steps(p)
        for k, v in scores.items():
            metrics[f"eval/{k}" if main else f"eval_{steps}steps/{k}"] = float(v.mean())
        if main:
            save_row(images[: p.eval.grid_prompts], tmp / "row.png")
            mlflow.log_artifact(str(tmp / "row.png"), "samples")
    return metrics


def execute_one(spec: RunSpec, p: Preset, tier: Tier, extra_steps: list[int], tags: dict) -> dict:
    shared = dataclasses.replace(p.shared, seed=spec.seed, rounds=spec.rounds)
    policy = tier.make_policy()
    method = None if spec.method == BASE else spec.build(p)
    params = {"shared": dataclasses.asdict(shared), "eval": dataclasses.asdict(p.eval), "rounds": spec.rounds}
    if method is not None:
        params["knobs"] = dataclasses.asdict(method.cfg)
        params["cost"] = dataclasses.asdict(method.cost(shared)) | {"nfe_per_round": nfe_per_round(method, shared)}
    run_tags = tags | {"method": spec.method, "variant": spec.variant, "seed": str(spec.seed),
                       "shared_digest": shared.digest() if method else "", "kind": "child"}
    with mlflow.start_run(run_name=f"{spec.method}:{spec.variant}:seed{spec.seed}", nested=True, tags=run_tags) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(flatten(params))
        t0, cum_nfe = time.perf_counter(), 0
        if method is not None:
            trainer = Trainer(policy, tier.text, method, tier.rewards, shared, tier.train_prompts)
            bar = tqdm(range(spec.rounds), desc=f"{spec.method}:{spec.variant}:seed{spec.seed}", leave=False)
            for r in bar:
                m = trainer.step()
                cum_nfe += m["nfe_rollout"] + m["nfe_train"] + m["nfe_reference"]
                metrics = {f"train/{k}": float(v) for k, v in m.items() if k != "round"}
                mlflow.log_metrics(metrics | {"train/cum_nfe": cum_nfe, "train/wall_s": time.perf_counter() - t0}, step=r)
                first = next(iter(shared.rewards))
                bar.set_postfix({first: f"{m[f'reward/{first}']:.4f}"})
        t_train = time.perf_counter() - t0
        policy.eval()
        res = evaluate(policy, p, tier, extra_steps, Path(tmp))
        res |= {"time/train_s": t_train, "time/eval_s": time.perf_counter() - t0 - t_train, "cost/total_nfe": cum_nfe}
        mlflow.log_metrics(res)
        return {"run_id": run.info.run_id, **res}


def execute_all(p: Preset, preset_name: str, runs: list[RunSpec], extra_steps: list[int], tier: Tier, client, exp_id,
                command: str, threads: int) -> str:
    in_domain = list(p.shared.rewards)
    tags = {"preset": preset_name, "git_commit": git_commit(), "tier": tier.name,
            "rewards": "; ".join(f"{n}: {r.describe()}" for n, r in tier.rewards.items())}
    parent_tags = tags | {"kind": "parent", "command": command, "threads": str(threads), "in_domain": ",".join(in_domain),
                          "out_of_domain": ",".join(n for n in tier.rewards if n not in in_domain),
                          "eval_steps": ",".join(map(str, [eval_steps(p)] + extra_steps))}
    mlflow.set_experiment(experiment_id=exp_id)
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"benchmark {preset_name}", tags=parent_tags) as parent:
        for i, spec in enumerate(tqdm(runs, desc="runs", leave=False)):
            try:
                res = execute_one(spec, p, tier, extra_steps, tags)
            except (FloatingPointError, ValueError, RuntimeError) as e:
                raise RunFailed(f"{spec.method}:{spec.variant} seed {spec.seed} failed: {e}. The {i} runs finished before "
                                f"it stay in the store (parent run {parent.info.run_id}); tables were not rewritten") from e
            shown = ", ".join(f"{k[5:]} {v:.4f}" for k, v in res.items() if k.startswith("eval/") and k[5:] in in_domain)
            tqdm.write(f"{spec.method}:{spec.variant} seed {spec.seed}: {spec.rounds} rounds, {res['cost/total_nfe']} NFE, "
                       f"train {res['time/train_s']:.1f} s, eval {res['time/eval_s']:.1f} s; {shown}")
        mlflow.log_metrics({"wall_s": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()})
        return parent.info.run_id


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
