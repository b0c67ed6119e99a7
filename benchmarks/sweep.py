"""Learning-rate selection per method family, by one rule for all: ``python -m benchmarks.sweep``.

Each family (G2RPO, Flow-GRPO, DanceGRPO, MixGRPO) trains on the preset with each learning rate of the grid, one
sweep seed apart from the benchmark's seeds (1000 by default), for the preset's rounds; every model is then scored
on the *train* prompts (fixed evaluation noise, the preset's images per prompt; held-out prompts are never looked
at) and the rate with the highest in-domain objective (the preset's weighted reward sum) is selected. The learning
rate is the only knob swept: it is the one every official code exposes as a tuning knob, and the official values
are tuned for models 5,000 times larger. G2RPO w/o MGAI takes G2RPO's rate (an ablation changes Lambda alone).
Writes ``sweep.md``, ``sweep.csv`` and ``sweep.json`` into ``--out``; the preset's rates (``g2rpo.presets.POCKET_LRS``)
are copied from the latter, and a test checks they agree. The same table lands in the benchmark's MLflow store (the
runner's default, ``--tracking-uri`` otherwise) as a run tagged ``kind = sweep`` in the preset's experiment, its
selection as params and the table under ``tables/``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eval.generate import prompt_scores
from g2rpo.files import atomic, write_text
from g2rpo.flags import at_least, check_writable
from g2rpo.loop import Trainer
from g2rpo.presets import DEFAULT_PRESET, PRESETS, preset as get_preset
from g2rpo.registry import METHODS, make_method
from g2rpo.tiers import check_tier, load_tier
from g2rpo.tracking import default_uri, git_commit, open_store

from .publish import publish
from .render import bootstrap_ci



def families() -> list[str]:
    """Every registered method family (its own method's name), in registration order: each gets a rate."""
    return [n for n, e in METHODS.items() if e.family == n]


def objective(scores: dict, weights: dict[str, float]) -> np.ndarray:
    """Per-prompt weighted sum of the in-domain rewards."""
    return sum(w * scores[k].numpy() for k, w in weights.items())


def train_and_score(method: str, lr: float, p, tier, seed: int, rounds: int) -> dict:
    shared = dataclasses.replace(p.shared, seed=seed, rounds=rounds)
    m = make_method(method, p.knobs, lr)
    policy = tier.make_policy()
    t0 = time.perf_counter()
    if rounds:
        trainer = Trainer(policy, tier.text, m, tier.rewards, shared, tier.train_prompts)
        for _ in range(rounds):
            trainer.step()
        ctx = trainer.evaluation_weights()
    else:
        ctx = contextlib.nullcontext()
    train_s = time.perf_counter() - t0
    rewards = {k: tier.rewards[k] for k in shared.rewards}
    with ctx, torch.no_grad():
        scores, _ = prompt_scores(policy.eval(), tier.text, tier.train_prompts, shared.sigmas(), rewards,
                                  p.eval.seed, p.eval.images_per_prompt, stats=False)
    return {"objective": objective(scores, shared.rewards), "train_s": train_s}


def select(results: dict[str, dict[float, float]]) -> dict[str, float]:
    """The rule: per family, the rate with the highest mean train-prompt objective (the smaller rate on a tie)."""
    return {f: max(sorted(r), key=lambda lr: r[lr]) for f, r in results.items()}


def render(rows: list[dict], chosen: dict[str, float], base: float, command: str, seed: int, rounds: int) -> str:
    lrs = sorted({r["lr"] for r in rows})
    lines = ["# Learning-rate sweep (train prompts only)", "", "Made by:", "", "```bash", command, "```", "",
             f"Sweep seed {seed} (apart from the benchmark's seeds 0, 1, ...), {rounds} rounds, one run per cell. Cell: mean "
             f"over the train prompts of the in-domain objective after training minus the base model's ({base:.4f}), "
             "with a 95% bootstrap interval over prompts; **bold** = selected (highest mean). Held-out prompts are "
             "not evaluated here.", "",
             "| family | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | selected | train s (per lr) |",
             "|---|" + "---|" * (len(lrs) + 2)]
    for f in dict.fromkeys(r["method"] for r in rows):
        cells, secs = [], []
        for lr in lrs:
            r = next((x for x in rows if x["method"] == f and x["lr"] == lr), None)
            if r is None:
                cells.append("–")
                continue
            c = f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            cells.append(f"**{c}**" if chosen[f] == lr else c)
            secs.append(f"{r['train_s']:.0f}")
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {chosen[f]:g} | {' / '.join(secs)} |")
    return "\n".join(lines) + "\n"


def record(client, exp_id: str, preset: str, command: str, chosen: dict[str, float], files: list[Path]) -> None:
    """The sweep as one MLflow run beside the benchmark's invocations: selection as params, the table as artifacts."""
    from mlflow.entities import Param

    run = client.create_run(exp_id, run_name=f"lr sweep {preset}", tags={
        "kind": "sweep", "preset": preset, "command": command, "git_commit": git_commit(),
        "mlflow.note.content": f"Learning-rate selection per method family on the train prompts: `{command}`."})
    client.log_batch(run.info.run_id, params=[Param(f"selected_lr.{f}", str(lr)) for f, lr in chosen.items()])
    publish(client, run.info.run_id, files)
    client.set_terminated(run.info.run_id)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(sorted(PRESETS))} (default {DEFAULT_PRESET})")
    ap.add_argument("--families", default=",".join(families()), help="method families to sweep (default: all registered)")
    ap.add_argument("--lrs", default="1e-5,3e-5,1e-4,3e-4", help="comma-separated learning rates")
    ap.add_argument("--rounds", type=int, help="training rounds (default: the preset's)")
    ap.add_argument("--seed", type=int, default=1000, help="sweep seed (keep it apart from the benchmark's seeds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="folder for sweep.md / sweep.json (default results/<preset>)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the runner's, sqlite inside --out)")
    a = ap.parse_args(argv)
    out = a.out or Path("results") / a.preset
    try:
        at_least(("--rounds", a.rounds, 1), ("--seed", a.seed, 0), ("--threads", a.threads, 1))
        p = get_preset(a.preset)
        fams = [f.strip() for f in a.families.split(",") if f.strip()]
        known = families()
        bad = [f for f in fams if f not in known]
        if bad or not fams:
            raise ValueError(f"--families: unknown {bad or 'empty list'}; choose from {', '.join(known)}")
        try:
            lrs = [float(x) for x in a.lrs.split(",") if x.strip()]
        except ValueError:
            lrs = []
        if not lrs or any(not 0 < lr < 1 for lr in lrs) or len(set(lrs)) != len(lrs):
            raise ValueError(f"--lrs: expected distinct comma-separated learning rates in (0, 1), got {a.lrs!r}")
        check_tier(p.shared.model, p.shared.skills)
        check_writable(out, "--out")
        out.mkdir(parents=True, exist_ok=True)
        # a broken store or a model that cannot load is an error before any training
        client, exp_id = open_store(a.tracking_uri or default_uri(out), f"g2rpo-bench/{a.preset}", out / "mlartifacts")
        tier = load_tier(p.shared.model, p.shared.skills)
    except (KeyError, RuntimeError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    rounds = p.shared.rounds if a.rounds is None else a.rounds
    command = "python -m benchmarks.sweep " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    base = train_and_score(fams[0], lrs[0], p, tier, a.seed, 0)["objective"]
    rows, results = [], {}
    for f in fams:
        for lr in lrs:
            r = train_and_score(f, lr, p, tier, a.seed, rounds)
            diff = r["objective"] - base
            lo, hi = bootstrap_ci(diff)
            rows.append({"method": f, "lr": lr, "mean": float(r["objective"].mean()), "diff": float(diff.mean()),
                         "ci_low": lo, "ci_high": hi, "train_s": r["train_s"]})
            results.setdefault(f, {})[lr] = float(r["objective"].mean())
            print(f"{f} lr {lr:g}: {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] vs base, {r['train_s']:.0f} s", flush=True)
    chosen = select(results)
    write_text(out / "sweep.md", render(rows, chosen, float(base.mean()), command, a.seed, rounds))
    write_text(out / "sweep.json", json.dumps({"command": command, "seed": a.seed, "rounds": rounds,
                                                "base_objective": float(base.mean()), "selected": chosen,
                                                "runs": rows}, indent=1) + "\n")
    with atomic(out / "sweep.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    record(client, exp_id, a.preset, command, chosen, [out / "sweep.csv", out / "sweep.md"])
    print(f"selected: {chosen}; wrote {out / 'sweep.md'} and {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
