"""Benchmark runner: ``python -m benchmarks.run --methods g2rpo,flowgrpo``.

Trains every (method, variant, seed) of the plan on one preset under identical shared settings,
evaluates each model (and the untrained base) on held-out prompts with in-domain and
out-of-domain rewards, logs everything to MLflow and renders the tables into ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from g2rpo.errors import os_error
from g2rpo.flags import check_writable
from g2rpo.presets import DEFAULT_PRESET, PRESETS, Preset, preset as get_preset
from g2rpo.recorder import Recorder
from g2rpo.registry import METHODS, default_methods
from g2rpo.tiers import LOADERS, check_skills, load_tier
from g2rpo.tracking import default_uri, open_store, shown_uri

from .execute import RunFailed, execute_all
from .plan import ALIASES, PlanError, RunSpec, describe, make_plan, parse_sweep
from .table import build_tables


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--methods", default="default", help=f"comma-separated, from {', '.join(METHODS)}; 'default': "
                    f"{', '.join(default_methods())}; 'all': every registered method")
    ap.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(sorted(PRESETS))} (default {DEFAULT_PRESET})")
    ap.add_argument("--seeds", type=int, help="training seeds per (method, variant); default from the preset")
    ap.add_argument("--rounds", type=int, help="training rounds (under --budget nfe: of the first method)")
    ap.add_argument("--out", type=Path, help="output folder (default results/<preset>)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: sqlite inside --out)")
    ap.add_argument("--sweep", action="append", default=[], metavar="METHOD.KNOB=V1;V2",
                    help='one knob of one method at several values, one variant each (repeatable), e.g. '
                         '"dancegrpo.eta=0.3;0.5", "mixgrpo.window_size=2;4"')
    ap.add_argument("--granular-sets", default="", help='G2RPO Lambda ablation, e.g. "1;1,2;1,3;1,2,3" '
                    '(= --sweep "g2rpo.granular_list=...")')
    ap.add_argument("--eta-step-sets", default="", help='G2RPO noise-step ablation, e.g. "0-3;0-7;4-7" '
                    '(= --sweep "g2rpo.eta_step_list=...")')
    ap.add_argument("--inference-steps", default="", help="extra evaluation step counts, e.g. 10,20")
    ap.add_argument("--skills", default="", help="scenes presets: comma-separated GenEval skills to train and evaluate "
                    "on (default all), e.g. counting,position")
    ap.add_argument("--budget", default="rounds", help="rounds (equal rounds) or nfe (equal model evaluations)")
    ap.add_argument("--lr", type=float, help="one learning rate for every method instead of the preset's")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the rollout forwards (speed, not results; default: the preset's)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and its cost accounting; no model work")
    ap.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    return ap.parse_args(argv)


def resolve(a) -> tuple[Preset, list[RunSpec], list[int]]:
    """Validate every flag and build the plan; raises PlanError/KeyError with a one-line message."""
    p = get_preset(a.preset)
    if a.compile is not None:
        p = dataclasses.replace(p, shared=dataclasses.replace(p.shared, compile=a.compile))
    named = {"all": list(METHODS), "default": default_methods()}
    methods = named.get(a.methods.strip()) or [m.strip() for m in a.methods.split(",") if m.strip()]
    given = {flag: getattr(a, flag[2:].replace("-", "_")) for flag in ALIASES}
    sweeps = [parse_sweep(f"{ALIASES[flag]}={text}", flag) for flag, text in given.items() if text.strip()]
    sweeps += [parse_sweep(text) for text in a.sweep]
    try:
        steps = [int(s) for s in a.inference_steps.split(",") if s.strip()]
    except ValueError:
        raise PlanError(f"--inference-steps: expected comma-separated integers, got {a.inference_steps!r}") from None
    if any(s < 1 for s in steps) or len(set(steps)) != len(steps):
        raise PlanError(f"--inference-steps: step counts must be distinct and >= 1, got {steps}")
    if a.threads < 1:
        raise PlanError("--threads must be >= 1")
    skills = tuple(k.strip() for k in a.skills.split(",") if k.strip())
    try:
        check_skills(p.shared.model, skills)
    except ValueError as e:
        raise PlanError(f"--skills: {e}") from None
    p = dataclasses.replace(p, shared=dataclasses.replace(p.shared, skills=skills))
    seeds = p.seeds if a.seeds is None else a.seeds
    rounds = p.shared.rounds if a.rounds is None else a.rounds
    runs = make_plan(p, methods, seeds, rounds, a.budget, sweeps, a.lr)
    return p, runs, steps


def readable_plan(rows: list[dict], preset_name: str) -> str:
    lines = [f"preset {preset_name}: base model + {len(rows)} (method, variant) rows",
             f"{'method':<15}{'variant':<28}{'rollout':>9}{'(official)':>11}{'train':>7}{'images':>8}{'steps':>6}"
             f"{'rounds':>8}{'total NFE':>11}{'seeds':>6}  weights"]
    for r in rows:
        official = r["nfe_rollout_per_prompt_official"]
        lines.append(f"{r['method']:<15}{r['variant']:<28}{r['nfe_rollout_per_prompt']:>9}"
                     f"{official if official != r['nfe_rollout_per_prompt'] else '':>11}{r['nfe_train_per_prompt']:>7}"
                     f"{r['images_scored_per_prompt']:>8}{r['optimizer_steps_per_round']:>6}{r['rounds']:>8}"
                     f"{r['total_nfe']:>11}{r['seeds']:>6}  {'LoRA ' + r['lora'] if r['lora'] else 'all'}")
    lines.append("(rollout / train / images: per prompt and round; (official): the rollout as the official loop counts "
                 "it, where ours reuses work; steps: optimizer steps per round; total NFE: all prompts and rounds, one seed)")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        p, runs, extra_steps = resolve(a)
    except (PlanError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if a.dry_run:
        rows = describe(runs, p)
        print(json.dumps(rows, indent=2, default=str) if a.json else readable_plan(rows, a.preset))
        return 0
    out = a.out or Path("results") / a.preset
    try:
        check_writable(out, "--out")
        if p.shared.model not in LOADERS:
            raise PlanError(f"preset {a.preset!r} needs model tier {p.shared.model!r}, which cannot be loaded here")
        out.mkdir(parents=True, exist_ok=True)
        uri = a.tracking_uri or default_uri(out)
        client, exp_id = open_store(uri, f"g2rpo-bench/{a.preset}", out / "mlartifacts")
        tier = load_tier(p.shared.model, p.shared.skills)  # a missing or corrupt model file fails here, before any training
    except (PlanError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    torch.set_num_threads(a.threads)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    experiment = f"g2rpo-bench/{a.preset}"
    spool = out / "offline" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    rec = Recorder(client, exp_id, spool, experiment)
    try:
        parent = execute_all(p, a.preset, runs, extra_steps, tier, rec, command, a.threads, out)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if rec.failure:
        print(f"warning: the MLflow store became unavailable during the run ({rec.failure}); training and evaluation "
              f"finished and {rec.spooled} records were kept in {spool}. When the store is back: "
              f"python -m benchmarks.sync {spool} --tracking-uri {shown_uri(uri)}, then python -m benchmarks.table "
              f"--tracking-uri {shown_uri(uri)} --experiment {experiment} --out {out}", file=sys.stderr)
        return 0
    try:
        files = build_tables(uri, exp_id, out, parent_run_id=parent)
    except OSError as e:  # a full disk, say: each file is the old one or the new one, and the runs are in the store
        print(f"error: writing the tables to {out}/ failed ({os_error(e)}); the {len(runs)} "
              f"runs are complete in {shown_uri(uri)} (parent run {parent}); the same command writes the tables "
              "without training again", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.0f} s: {len(runs)} runs in {shown_uri(uri)} (parent run {parent}); "
          f"tables and figures in {out}/: {', '.join(sorted(f.name for f in files))}")
    print(f"browse with: mlflow ui --backend-store-uri {shown_uri(uri)}, then open "
          f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{parent}?workflowType=machine_learning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
