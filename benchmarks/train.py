"""Train one method on one preset: ``python -m benchmarks.train --method g2rpo --preset smoke``.

The benchmark runner drives many of these; this entry point is for a single run and for checking a config. Under
``torchrun --nproc_per_node W -m benchmarks.train ...`` the round's prompts are split over W processes
(``g2rpo.distributed``) with the single-process result; rank 0 alone prints and writes. ``--fsdp`` shards the
weights, gradients and optimizer states over the processes; ``--checkpoint DIR`` saves the full training state after
every round (one shard per process) and continues from it when the run is started again. ``--mlflow URI`` has rank 0
log the plan and every round's metrics to an MLflow store (the benchmark runner's recorder: if the store goes away
mid-run, records are spooled locally for ``python -m benchmarks.sync``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from g2rpo.checkpoint import save_policy
from g2rpo.distributed import DataParallel
from g2rpo.ema import EMAConfig
from g2rpo.flags import FlagError, at_least, check_writable
from g2rpo.loop import Trainer, trained_meta
from g2rpo.presets import preset
from g2rpo.recorder import Recorder
from g2rpo.registry import METHODS, make_method
from g2rpo.tiers import check_tier, load_tier
from g2rpo.tracking import flatten, git_commit, open_store

from .driver import Driver
from .plan import PlanError, parse_knob, shown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--method", default="g2rpo", help=f"one of {', '.join(METHODS)}")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--model", help="another model tier than the preset's, e.g. tiny-sd3 (the SD3 class) with smoke")
    ap.add_argument("--lora", help="train a LoRA adapter: flowgrpo-flux, flowgrpo-sd3 or dancegrpo-flux")
    ap.add_argument("--precision", choices=("fp32", "bf16"), help="model compute dtype (bf16: autocast, fp32 weights)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the rollout forwards (speed, not results; default: the preset's)")
    ap.add_argument("--gradient-checkpointing", action="store_true", default=None, help="recompute block activations")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="a knob of the method (repeatable), typed by its config, e.g. eta=0.5, granular_list=1,2,3")
    ap.add_argument("--eta-step-list", help="G2RPO noise-injection steps M, e.g. 0-3 (= --set eta_step_list=...)")
    ap.add_argument("--granular-list", help="G2RPO granularities Lambda, e.g. 1,2,3 (= --set granular_list=...)")
    ap.add_argument("--ema-update-step-interval", type=int, metavar="N",
                    help="average the weights every N optimizer steps for evaluation and --save (0 = off; Flow-GRPO: 8)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    ap.add_argument("--save", help="write the trained policy here (safetensors + JSON sidecar)")
    ap.add_argument("--fsdp", action="store_true", help="under torchrun, shard the model over the processes (FSDP2)")
    ap.add_argument("--checkpoint", help="save the training state here after every round and resume from it")
    ap.add_argument("--mlflow", metavar="URI", help="rank 0 logs to this MLflow store, e.g. sqlite:///runs/mlflow.db")
    ap.add_argument("--dry-run", action="store_true", help="print the config and the cost per prompt and round, run nothing")
    a = ap.parse_args(argv)
    try:
        at_least(("--threads", a.threads, 1), ("--rounds", a.rounds, 1), ("--seed", a.seed, 0),
                 ("--ema-update-step-interval", a.ema_update_step_interval, 0))
        p = preset(a.preset)
        given = [("--eta-step-list", f"eta_step_list={a.eta_step_list}")] if a.eta_step_list is not None else []
        given += [("--granular-list", f"granular_list={a.granular_list}")] if a.granular_list is not None else []
        overrides = {}
        for flag, text in given + [("--set", t) for t in a.set]:
            knob, sep, value = text.partition("=")
            if not sep:
                raise PlanError(f"{flag}: expected KNOB=VALUE, got {text!r}")
            overrides[knob.strip()] = parse_knob(a.method, knob.strip(), value, flag)
        method = make_method(a.method, p.knobs, **overrides)
        if a.ema_update_step_interval is not None:
            n = a.ema_update_step_interval
            method.cfg.ema = None if n == 0 else dataclasses.replace(method.ema or EMAConfig(), update_step_interval=n)
        given = (("rounds", a.rounds), ("seed", a.seed), ("model", a.model), ("lora", a.lora), ("precision", a.precision),
                 ("gradient_checkpointing", a.gradient_checkpointing), ("compile", a.compile))
        shared = dataclasses.replace(p.shared, **{k: v for k, v in given if v is not None})
        method.validate(shared)
        if a.save:  # probed now, not found out after training
            if Path(a.save).suffix == ".json":
                raise FlagError(f"--save {a.save!r}: the weights need another suffix than .json (their metadata is "
                                f"written beside them as {Path(a.save).with_suffix('.json').name})")
            check_writable(Path(a.save), "--save", file=True)
        if a.checkpoint:
            check_writable(Path(a.checkpoint), "--checkpoint")
    except (KeyError, ValueError, TypeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    plan = {"method": method.name, "shared": dataclasses.asdict(shared), "shared_digest": shared.digest(),
            "comparable_digest": shared.comparable_digest(),
            "knobs": dataclasses.asdict(method.cfg), "cost_per_prompt_round": dataclasses.asdict(method.cost(shared)),
            "optimizer_steps_per_round": method.optimizer_steps(shared), "lora": method.lora(shared)}
    if a.dry_run:
        print(json.dumps(plan, indent=2, default=str))
        return 0
    try:  # before any model is loaded: a bad store fails in seconds
        check_tier(shared.model, shared.skills)  # and before the store gets a run
        rec = _mlflow_run(a, plan) if a.mlflow and int(os.environ.get("RANK", "0")) == 0 else None
    except KeyError as e:
        print(f"error: {e.args[0]}; use --dry-run to see the plan", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    try:
        tier = load_tier(shared.model, shared.skills)
    except KeyError as e:
        print(f"error: {e.args[0]}; use --dry-run to see the plan", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    try:
        dp = DataParallel.from_env(fsdp=a.fsdp)
        rewards = tier.rewards
        rewards = rewards.to(dp.device) if hasattr(rewards, "to") else {n: r.to(dp.device) for n, r in rewards.items()}
        trainer = Trainer(tier.make_policy().to(dp.device), tier.text, method, rewards, shared, tier.train_prompts, dp)
        drv = Driver(trainer, Path(a.checkpoint) if a.checkpoint else None, dp)
        resumed = drv.resume()
    except ValueError as e:  # CheckpointError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    say = print if dp.main else (lambda *_: None)
    say(json.dumps({k: plan[k] for k in ("method", "shared_digest", "cost_per_prompt_round")}
                   | {"world": dp.world, "fsdp": dp.sharded, "resumed_at_round": trainer.round_idx if resumed else None}))
    if rec and resumed:
        rec.tags("run", {"resumed_at_round": str(trainer.round_idx)})
    try:
        for m in drv.rounds(shared.rounds):
            say(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()}))
            if rec:
                rec.metrics("run", {k: v for k, v in m.items() if isinstance(v, (int, float))}
                            | {"cum_nfe": drv.cum_nfe, "wall_s": drv.elapsed()}, step=m["round"])
        if a.save:
            variant = ";".join(f"{k}={shown(v)}" for k, v in overrides.items()) or "default"
            meta = trained_meta(method, shared, trainer.round_idx, variant, tier.settings) | {"preset": a.preset,
                                                                                              "world": dp.world}
            with trainer.evaluation_weights():  # Flow-GRPO saves its EMA; written inside: the state may share storage
                state = dp.full_state(trainer.policy)  # a collective under FSDP: every rank takes part, rank 0 writes
                if dp.main:
                    save_policy(trainer.policy, a.save, meta, state)
    except (OSError, ValueError, FloatingPointError) as e:  # a full disk, NaN everywhere: CheckpointError included
        kept = f"; the same command resumes from the state in {a.checkpoint}" if a.checkpoint else ""
        print(f"error: at round {trainer.round_idx} of {shared.rounds}: {e}{kept}", file=sys.stderr)
        if rec:
            rec.end("run", "FAILED")
        dp.close()
        return 1
    if rec:
        rec.end("run")
    dp.close()
    return 0


def _mlflow_run(a, plan: dict):
    """A Recorder with one started run holding the plan as params (rank 0 only); RuntimeError if the store is unusable."""
    experiment = f"g2rpo-train/{a.preset}"
    client, exp_id = open_store(a.mlflow, experiment, None)
    rec = Recorder(client, exp_id, Path(a.checkpoint or ".") / "mlflow-spool.jsonl", experiment)
    rec.start("run", f"{plan['method']}:{a.preset}", {"commit": git_commit(), "kind": "benchmarks.train",
                                                     "world": os.environ.get("WORLD_SIZE", "1"), "fsdp": str(a.fsdp)})
    rec.params("run", flatten({k: plan[k] for k in ("method", "shared", "shared_digest", "comparable_digest", "knobs")}))
    return rec


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # after a finished job (weights, state and MLflow records written, process group destroyed) gloo's threads
        # can still abort the interpreter's finalisation ("terminate called without an active exception", exit -6;
        # seen twice in clean-clone CI runs, each of ~25 torchrun jobs): leave without finalising
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
