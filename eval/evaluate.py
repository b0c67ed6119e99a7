"""Score a checkpoint: ``python -m eval.evaluate --checkpoint PATH|base --prompts SET|FILE --rewards r1,r2,...``.

Generates with the deterministic ODE sampler and fixed per-prompt noise (image 0 of every prompt is the noise the
benchmark runner evaluates with), saves PNGs and ``metadata.jsonl``, scores the saved images with the chosen
rewards plus the image statistics, and writes ``scores.csv`` (per image) and ``summary.csv`` (mean, std, n per
reward, split into in-domain = trained on, out-of-domain, and guard statistics). ``--rescore`` scores the
images of an earlier evaluation again without generating. Rewards are the tier's or the paper tier's registry
(``g2rpo.rewards.registry``, weights from ``--reward-dir``); prompt sets are described in ``eval/prompts.py``.
Summaries are per prompt group (e.g. HPSv2 style) and overall. Everything is logged to MLflow.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from g2rpo.checkpoint import load_strict, read_meta, read_state
from g2rpo.config import SharedConfig
from g2rpo.errors import os_error
from g2rpo.files import atomic, sha256, write_text
from g2rpo.flags import at_least, check_writable
from g2rpo.loop import apply_model_settings
from g2rpo.rewards.registry import PAPER_REWARDS, RewardPaths, paper_rewards
from g2rpo.tiers import check_tier, load_tier
from g2rpo.tracking import default_uri, open_store, shown_uri

from .generate import generate, save_png, score
from .prompts import TIER_SETS, read_prompt_set


class EvalError(ValueError):
    """Bad input to the evaluation; reported as one line with exit code 2."""


def load_model(checkpoint: str, tier_name: str):
    """(tier, policy, in-domain rewards, checkpoint identity) for 'base' or a checkpoint written by the runner or
    benchmarks.train. The policy is rebuilt as it was trained (timestep convention, precision, LoRA adapter) from the
    settings recorded beside the weights."""
    if checkpoint == "base":
        tier = load_tier(tier_name)
        return tier, tier.make_policy().eval(), {}, "base"
    path = Path(checkpoint)
    meta = read_meta(path)
    origin = "checkpoints are written by python -m benchmarks.run into <out>/models/"
    state = read_state(path, origin)
    tier = load_tier(meta["tier"])
    trained = meta.get("tier_settings")  # None: a checkpoint from before they were recorded
    if trained is not None and trained != tier.settings:
        diff = sorted(k for k in set(trained) | set(tier.settings) if trained.get(k) != tier.settings.get(k))
        raise EvalError(f"{path}: trained with tier {meta['tier']!r} settings "
                        f"{', '.join(f'{k}={trained.get(k)}' for k in diff)}, but this environment gives "
                        f"{', '.join(f'{k}={tier.settings.get(k)}' for k in diff)} (G2RPO_RESOLUTION, the prompt files)")
    policy = apply_model_settings(tier.make_policy(), meta.get("settings", {}))
    load_strict(policy, state, path, origin)
    identity = f"{path.resolve()} sha256:{sha256(path)[:16]}"  # absolute: benchmarks.collect may run from elsewhere
    return tier, policy.eval(), dict(meta.get("in_domain", {})), identity


def pick_rewards(names: list[str], tier, reward_dir: Path | None) -> dict:
    """The tier's rewards by name, plus paper-tier ones loaded from ``reward_dir`` (each model once)."""
    unknown = [r for r in names if r not in tier.rewards and r not in PAPER_REWARDS]
    if unknown or not names:
        raise EvalError(f"--rewards: unknown {unknown or 'empty list'}; tier {tier.name!r} has {', '.join(tier.rewards)}; "
                        f"the paper tier's are {', '.join(PAPER_REWARDS)}")
    paper = [n for n in names if n not in tier.rewards]
    loaded = paper_rewards(paper, RewardPaths.under(reward_dir) if reward_dir else None) if paper else {}
    return {n: tier.rewards[n] if n in tier.rewards else loaded[n] for n in names}


def load_png(path: Path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def generate_set(policy, tier, prompts: list[tuple[str, str]], steps: int, shift: float, k: int, seed: int, out: Path,
                 checkpoint: str) -> None:
    sigmas = dataclasses.replace(SharedConfig(), num_steps=steps, shift=shift).sigmas()
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for j in range(k):
        images = generate(policy, tier.text, [p for p, _ in prompts], sigmas, seed=seed, image_index=j)
        for i, ((p, group), img) in enumerate(zip(prompts, images)):
            name = f"images/{i:05d}_{j}.png"
            save_png(img, out / name)
            records.append({"prompt_index": i, "prompt": p, "group": group, "image_index": j, "image": name, "seed": seed,
                            "steps": steps, "shift": shift, "checkpoint": checkpoint, "tier": tier.name})
    write_text(out / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def score_set(out: Path, rewards: dict, in_domain: dict):
    """Score the saved images (so a rescore gives the same numbers); returns (per-image, summary) frames."""
    try:
        meta = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines() if ln.strip()]
        images = torch.stack([load_png(out / m["image"]) for m in meta])
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"{out} does not hold a readable evaluation (metadata.jsonl and images/): {e}") from None
    scores = score(images, [m["prompt"] for m in meta], rewards)
    per = pd.DataFrame(meta)
    for k, v in scores.items():
        per[k] = v.numpy()
    groups = per.get("group", pd.Series(["all"] * len(per))).fillna("all").to_numpy()
    rows = []
    for k, v in scores.items():
        domain = "guard" if k.startswith("stat/") else ("in" if k in in_domain else "out")
        for g in (["all"] + sorted(set(groups)) if len(set(groups)) > 1 else ["all"]):
            x = v if g == "all" else v[torch.from_numpy(groups == g)]
            rows.append({"reward": k, "group": g, "domain": domain, "mean": float(x.mean()),
                         "std": float(x.std()) if len(x) > 1 else 0.0, "n": len(x),
                         "checkpoint": rewards[k].checkpoint if k in rewards else ""})
    return per, pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.evaluate", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--checkpoint", default="base", help="'base' (the tier's untrained model) or NAME.safetensors")
    ap.add_argument("--tier", default="pocket", help="model tier of 'base' (a checkpoint names its own)")
    ap.add_argument("--prompts", default="heldout", help="heldout, train, a text file (one prompt per line), a JSON file "
                    "(list, HPDv2 test.json, or {group: [prompts]}) or a folder with the HPSv2 benchmark's style files")
    ap.add_argument("--rewards", default="all", help="comma-separated names (the tier's and the paper tier's: "
                    "hps, clip, pickscore[_100|_26], imagereward), or 'all' = the tier's")
    ap.add_argument("--reward-dir", type=Path, help="folder holding the paper-tier reward weights, one folder per hub "
                    "repository (HPSv2/, DFN5B-CLIP-ViT-H-14-378/, PickScore_v1/, ...); without it hub ids are tried")
    ap.add_argument("--steps", type=int, default=10, help="ODE steps")
    ap.add_argument("--shift", type=float, default=3.0, help="schedule shift")
    ap.add_argument("--images-per-prompt", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-prompt noise")
    ap.add_argument("--out", type=Path, default=Path("results/eval"))
    ap.add_argument("--rescore", action="store_true", help="score the images already in --out again, no generation")
    ap.add_argument("--tracking-uri", help="MLflow store (default: sqlite inside --out)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        at_least(("--steps", a.steps, 1), ("--images-per-prompt", a.images_per_prompt, 1), ("--threads", a.threads, 1),
                 ("--seed", a.seed, 0))
        if not 0 < a.shift < math.inf:
            raise EvalError(f"--shift must be > 0 and finite, got {a.shift}")
        if a.reward_dir is not None and not a.reward_dir.is_dir():
            raise EvalError(f"--reward-dir {a.reward_dir} is not a folder")
        if a.rescore:
            if not (a.out / "metadata.jsonl").is_file():
                raise EvalError(f"--rescore: {a.out}/metadata.jsonl does not exist")
            try:
                first = json.loads((a.out / "metadata.jsonl").read_text().splitlines()[0])
                a.checkpoint, a.tier = first["checkpoint"].split(" sha256:")[0], first["tier"]
            except (OSError, ValueError, IndexError, KeyError, TypeError, AttributeError):
                raise EvalError(f"--rescore: {a.out}/metadata.jsonl is not the metadata of an evaluation") from None
        # everything that needs no model comes first: a prompt file (only the tier's own sets need the tier), the
        # output folder, the tier the checkpoint names, the store
        prompts = None if a.rescore or a.prompts in TIER_SETS else read_prompt_set(a.prompts, None)
        check_writable(a.out, "--out")
        check_tier(a.tier if a.checkpoint == "base" else read_meta(Path(a.checkpoint)).get("tier"))
        a.out.mkdir(parents=True, exist_ok=True)
        uri = a.tracking_uri or default_uri(a.out)
        client, exp_id = open_store(uri, "g2rpo-eval", a.out / "mlartifacts")
        tier, policy, in_domain, identity = load_model(a.checkpoint, a.tier)
        names = list(tier.rewards) if a.rewards == "all" else [r.strip() for r in a.rewards.split(",") if r.strip()]
        rewards = pick_rewards(names, tier, a.reward_dir)
        if a.prompts in TIER_SETS and not a.rescore:
            prompts = read_prompt_set(a.prompts, tier)
    except (EvalError, ValueError, KeyError, RuntimeError, OSError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    import mlflow

    t0 = time.perf_counter()
    try:
        if not a.rescore:
            generate_set(policy, tier, prompts, a.steps, a.shift, a.images_per_prompt, a.seed, a.out, identity)
        per, summary = score_set(a.out, rewards, in_domain)
        for df, name in ((per, "scores.csv"), (summary, "summary.csv")):
            with atomic(a.out / name) as tmp:
                df.to_csv(tmp, index=False, float_format="%.6g")
    except OSError as e:  # a full disk, say: every file written is whole (the old one or the new one)
        print(f"error: writing to {a.out}/ failed ({os_error(e)}); the same command writes "
              "them again", file=sys.stderr)
        return 1
    mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run(run_name=f"eval {Path(a.checkpoint).stem}", tags={"checkpoint": identity, "tier": tier.name,
                                                                            "rescore": str(a.rescore)}):
        mlflow.log_params({"prompts": a.prompts, "steps": a.steps, "shift": a.shift, "seed": a.seed,
                           "images_per_prompt": a.images_per_prompt, "rewards": ",".join(names)})
        mlflow.log_metrics({f"{r.domain}/{r.reward}" + ("" if r.group == "all" else f"/{r.group}"): r.mean
                            for r in summary.itertuples()})
        mlflow.log_artifact(str(a.out / "scores.csv"))
        mlflow.log_artifact(str(a.out / "summary.csv"))
    print(summary.drop(columns="checkpoint").to_string(index=False))
    print(f"{len(per)} images of {per.prompt_index.nunique()} prompts scored in {time.perf_counter() - t0:.1f} s; "
          f"files in {a.out}/, run logged to {shown_uri(uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
