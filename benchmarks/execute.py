"""Executes a plan: one MLflow parent run per invocation, one child run per (method, variant, seed)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import resource
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from eval.generate import prompt_scores, save_png
from eval.stats import noise_floor
from g2rpo.checkpoint import save_policy
from g2rpo.files import alive, remove_stale
from g2rpo.loop import Trainer, trained_meta
from g2rpo.method import nfe_per_round
from g2rpo.presets import Preset
from g2rpo.tiers import Tier

from .driver import Driver
from .plan import BASE, RunSpec
from .publish import LOGGED
from g2rpo.recorder import Recorder
from g2rpo.tracking import flatten, git_commit


class RunFailed(RuntimeError):
    """A training or evaluation run failed; the runs finished before it stay in the store."""


def eval_steps(p: Preset) -> int:
    return p.eval.steps or p.shared.num_steps


def sigmas_for(p: Preset, steps: int) -> torch.Tensor:
    return dataclasses.replace(p.shared, num_steps=steps).sigmas()


def evaluate(policy, p: Preset, tier: Tier, extra_steps: list[int], tmp: Path, log_artifact,
             noise_floor: bool = False) -> dict[str, float]:
    """Score the held-out prompts at the main and extra step counts; per-prompt CSVs and a sample row as artifacts.
    With ``noise_floor`` the main evaluation is repeated with other evaluation noise (``noise2_scores_*.csv``): one
    model scored twice, the floor below which a difference is the evaluation's own noise."""
    prompts = tier.eval_prompts[: p.eval.num_prompts or None]
    metrics = {}
    runs = [(s, p.eval.seed, "") for s in [eval_steps(p)] + [s for s in extra_steps if s != eval_steps(p)]]
    runs += [(eval_steps(p), p.eval.seed + 1, "noise2_")] if noise_floor else []
    for steps, seed, tag in runs:
        scores, images = prompt_scores(policy, tier.text, prompts, sigmas_for(p, steps), tier.rewards, seed,
                                       p.eval.images_per_prompt, gap=tuple(p.shared.rewards))
        df = pd.DataFrame({"prompt_index": range(len(prompts)), "prompt": prompts} | {k: v.numpy() for k, v in scores.items()})
        df.to_csv(tmp / f"{tag}scores_{steps}steps.csv", index=False)
        log_artifact(tmp / f"{tag}scores_{steps}steps.csv", "eval")
        main = steps == eval_steps(p) and not tag
        prefix = "eval/" if main else "eval_noise2/" if tag else f"eval_{steps}steps/"
        metrics |= {prefix + k: float(v.mean()) for k, v in scores.items()}
        metrics |= {prefix + k: v for k, v in tier.summary(prompts, scores).items()} if tier.summary else {}
        if main:
            save_png(torch.cat(list(images[: p.eval.grid_prompts]), dim=2), tmp / "row.png")  # side by side, native size
            log_artifact(tmp / "row.png", "samples")
    if tier.indist_prompts:  # the in-distribution prompts, main step count and noise only, reported apart
        scores, _ = prompt_scores(policy, tier.text, tier.indist_prompts, sigmas_for(p, eval_steps(p)), tier.rewards,
                                  p.eval.seed, p.eval.images_per_prompt)
        df = pd.DataFrame({"prompt_index": range(len(tier.indist_prompts)), "prompt": tier.indist_prompts}
                          | {k: v.numpy() for k, v in scores.items()})
        df.to_csv(tmp / f"indist_scores_{eval_steps(p)}steps.csv", index=False)
        log_artifact(tmp / f"indist_scores_{eval_steps(p)}steps.csv", "eval")
        metrics |= {"eval_indist/" + k: float(v.mean()) for k, v in scores.items()}
        metrics |= {"eval_indist/" + k: v for k, v in tier.summary(tier.indist_prompts, scores).items()} if tier.summary else {}
    return metrics


def curve_point(trainer: Trainer, p: Preset, tier: Tier, shared) -> dict[str, float]:
    """In-domain rewards of the fixed curve set (first n held-out and train prompts, evaluation noise, ODE) with the
    weights the method evaluates: a learning curve that the draw of a round's prompts does not move."""
    n = p.eval.curve_prompts or None
    rewards = {k: tier.rewards[k] for k in [*shared.rewards, *tier.curve_rewards]}
    out = {}
    with trainer.evaluation_weights():
        for split, prompts in (("heldout", tier.eval_prompts[:n]), ("train", tier.train_prompts[:n])):
            scores, _ = prompt_scores(trainer.policy, tier.text, prompts, sigmas_for(p, eval_steps(p)), rewards,
                                      p.eval.seed, stats=False)
            out |= {f"curve/{split}/{k}": float(v.mean()) for k, v in scores.items()}
    return out


def curve_noise_floor(policy, p: Preset, tier: Tier, shared) -> dict[str, float]:
    """The curve set's own noise floor, from the base model: its held-out curve prompts scored with the evaluation
    noise and with another seed's; per in-domain reward, the larger end of the 95% bootstrap interval of the mean
    difference (how far a curve point moves by the draw of noise alone). A method shows signal once its curve exceeds
    its round-0 point by more than this (``benchmarks.table.time_to_signal``)."""
    prompts = tier.eval_prompts[: p.eval.curve_prompts or None]
    rewards = {k: tier.rewards[k] for k in shared.rewards}
    a, b = (prompt_scores(policy, tier.text, prompts, sigmas_for(p, eval_steps(p)), rewards, seed, stats=False)[0]
            for seed in (p.eval.seed, p.eval.seed + 1))
    floors = {k: noise_floor(a[k].numpy(), b[k].numpy()) for k in rewards}
    return {f"curve/noise_floor/{k}": max(abs(f["ci_low"]), abs(f["ci_high"])) for k, f in floors.items()}


def run_key(spec: RunSpec, p: Preset, extra_steps: list[int], commit: str) -> str:
    """Identity of one run of a plan: the same command on the same code gives the same key (for resuming)."""
    blob = repr((dataclasses.asdict(spec), dataclasses.asdict(p.shared), sorted(p.knobs.items(), key=str),
                 dataclasses.asdict(p.eval), extra_steps, commit))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def execute_one(spec: RunSpec, p: Preset, tier: Tier, extra_steps: list[int], tags: dict, ckpt: Path, rec: Recorder,
                parent: str, resume_run_id: str | None = None) -> dict:
    """Train and evaluate one run; after every round its state is checkpointed to ``ckpt`` (atomically), and with
    ``resume_run_id`` the run continues that MLflow run from its last checkpoint (a ``g2rpo.train_state`` folder)."""
    shared = dataclasses.replace(p.shared, seed=spec.seed, rounds=spec.rounds)
    policy = tier.make_policy()
    method = None if spec.method == BASE else spec.build(p)
    params = {"shared": dataclasses.asdict(shared), "eval": dataclasses.asdict(p.eval), "rounds": spec.rounds}
    if method is not None:
        params["knobs"] = dataclasses.asdict(method.cfg)
        params["cost"] = dataclasses.asdict(method.cost(shared)) | {
            "nfe_per_round": nfe_per_round(method, shared), "nfe_per_round_official": nfe_per_round(method, shared, True)}
    run_tags = tags | {"method": spec.method, "variant": spec.variant, "seed": str(spec.seed),
                       "shared_digest": shared.digest() if method else "",
                       "comparable_digest": shared.comparable_digest() if method else "", "kind": "child"}
    local = tags["run_key"]
    rec.start(local, f"{spec.method}:{spec.variant}:seed{spec.seed}", run_tags, parent, resume_run_id)
    if not resume_run_id:
        rec.params(local, flatten(params))
    try:
        res = _train_and_evaluate(spec, p, tier, extra_steps, shared, policy, method, ckpt, rec, local,
                                  resume_run_id is not None)
    except BaseException:
        rec.end(local, "FAILED")
        raise
    rec.end(local)
    shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete in MLflow (or in the local spool)
    return {"run_id": rec.run_id(local), **res}


def _train_and_evaluate(spec, p, tier, extra_steps, shared, policy, method, ckpt, rec, local, resuming) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        every = p.eval.curve_every
        if not resuming:
            shutil.rmtree(ckpt, ignore_errors=True)  # a state left by an invocation that is not being continued
        if method is not None:
            trainer = Trainer(policy, tier.text, method, tier.rewards, shared, tier.train_prompts)  # reference = base
            rec.metrics(local, {"time/compile_s": trainer.compile_s})  # once per process: not this run's training
            drv = Driver(trainer, ckpt)
            drv.resume()

            def log_curve(step: int) -> None:  # a curve point; the driver does not count its seconds as training
                rec.metrics(local, drv.paused(lambda: curve_point(trainer, p, tier, shared)) | {
                    "curve/cum_nfe": drv.cum_nfe, "curve/wall_s": drv.elapsed()}, step=step)

            bar = tqdm(total=spec.rounds, initial=trainer.round_idx, desc=f"{spec.method}:{spec.variant}:seed{spec.seed}",
                       leave=False)
            first = next(iter(shared.rewards))
            for m in drv.rounds(spec.rounds, before=lambda r: log_curve(r) if every and r % every == 0 else None):
                metrics = {f"train/{k}": float(v) for k, v in m.items() if k != "round"}
                rec.metrics(local, metrics | {"train/cum_nfe": drv.cum_nfe, "train/wall_s": drv.elapsed()}, step=m["round"])
                bar.update()
                bar.set_postfix({first: f"{m[f'reward/{first}']:.4f}"})
            bar.close()
            if every:  # the last point: the model the tables score
                log_curve(spec.rounds)
            t_train, cum_nfe = drv.elapsed(), drv.cum_nfe
        else:
            if every:  # curve time, not training time, like every curve point
                rec.metrics(local, curve_noise_floor(policy, p, tier, shared))
            t_train, cum_nfe = 0.0, 0
        te = time.perf_counter()
        policy.eval()
        # the weights a method evaluates: Flow-GRPO's EMA, the live ones otherwise
        with trainer.evaluation_weights() if method is not None else contextlib.nullcontext():
            if method is not None:  # the trained model, for python -m eval.evaluate --checkpoint
                model = ckpt.parent.parent / "models" / f"{spec.method}-{spec.variant}-seed{spec.seed}.safetensors"
                save_policy(policy, model, trained_meta(method, shared, spec.rounds, spec.variant, tier.settings)
                            | {"run_key": local})
                rec.tags(local, {"checkpoint": str(model)})
            res = evaluate(policy, p, tier, extra_steps, Path(tmp), lambda path, folder: rec.artifact(local, path, folder),
                           noise_floor=method is None)
        res |= {"time/train_s": t_train, "time/eval_s": time.perf_counter() - te, "cost/total_nfe": cum_nfe}
        rec.metrics(local, res)
    return res


def describe_invocation(preset_name: str, tier: str, runs: list[RunSpec], command: str) -> str:
    """The parent run's description (the UI shows it on the run page): what this invocation compared, in one paragraph."""
    trained = [r for r in runs if r.method != BASE]
    rows = list(dict.fromkeys((r.method, r.variant) for r in trained))
    names = ", ".join(m if v == "default" else f"{m} ({v})" for m, v in rows)
    seeds = sorted({r.seed for r in trained})
    rounds = sorted({r.rounds for r in trained})
    return (f"Benchmark of preset `{preset_name}` on tier `{tier}`: {names}, each with {len(seeds)} training seed(s) "
            f"and {'/'.join(map(str, rounds))} rounds, plus the untrained base model, all scored on the held-out "
            f"prompts; one child run per (method, variant, seed). Tables, figures and README are artifacts of this run "
            f"(tables/, figures/). Command: `{command}`.")


def unfinished_invocation(client, exp_id: str, digest: str):
    """The latest parent run of the same plan that did not finish (killed or failed, in training or while its tables
    were written: they are published last), or None. A run still marked RUNNING by a live process on this host is
    another invocation at work, not an interrupted one."""
    runs = client.search_runs([exp_id], f"tags.kind = 'parent' and tags.plan_digest = '{digest}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or runs[0].info.status == "FINISHED" and LOGGED in runs[0].data.tags:
        return None
    t = runs[0].data.tags
    if runs[0].info.status == "RUNNING" and t.get("host") == socket.gethostname() and alive(int(t.get("pid", 0))):
        return None
    return runs[0]


def execute_all(p: Preset, preset_name: str, runs: list[RunSpec], extra_steps: list[int], tier: Tier, rec: Recorder,
                command: str, threads: int, out: Path) -> str:
    """Runs the plan under one parent run. If the same plan on the same code was interrupted, its parent run is
    continued: finished runs are kept as they are and an interrupted one resumes from its last completed round."""
    in_domain = list(p.shared.rewards)
    commit = git_commit()
    keys = [run_key(spec, p, extra_steps, commit) for spec in runs]
    digest = hashlib.sha256(repr((preset_name, keys, str(out.resolve()))).encode()).hexdigest()[:16]
    tags = {"preset": preset_name, "git_commit": commit, "tier": tier.name,
            "rewards": "; ".join(f"{n}: {r.describe()}" for n, r in tier.rewards.items())}
    parent_tags = tags | {"kind": "parent", "mlflow.note.content": describe_invocation(preset_name, tier.name, runs, command),
                          "command": command, "threads": str(threads), "in_domain": ",".join(in_domain),
                          "out_of_domain": ",".join(n for n in tier.rewards if n not in in_domain),
                          "eval_steps": ",".join(map(str, [eval_steps(p)] + extra_steps)), "plan_digest": digest,
                          "curve_rewards": ",".join(tier.curve_rewards), "accuracy_threshold": str(p.eval.accuracy_threshold)}
    client, exp_id = rec.client, rec.exp_id
    for folder in (out, out / "checkpoints"):
        remove_stale(folder)
    prior = unfinished_invocation(client, exp_id, digest)
    children = {}
    if prior is not None:
        found = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{prior.info.run_id}'",
                                   order_by=["attributes.start_time ASC"], max_results=50000)
        children = {c.data.tags.get("run_key"): c for c in found}
        tqdm.write(f"resuming the interrupted invocation {prior.info.run_id}: "
                   f"{sum(c.info.status == 'FINISHED' for c in children.values())} of {len(runs)} runs already finished")
    t0 = time.perf_counter()
    rec.start("parent", f"benchmark {preset_name}", parent_tags, resume_id=prior.info.run_id if prior else None)
    rec.tags("parent", {"host": socket.gethostname(), "pid": str(os.getpid())})  # who runs it now (also on resume)
    try:
        for i, (spec, key) in enumerate(zip(tqdm(runs, desc="runs", leave=False), keys)):
            old = children.get(key)
            if old is not None and old.info.status == "FINISHED":
                continue
            try:
                res = execute_one(spec, p, tier, extra_steps, tags | {"run_key": key}, out / "checkpoints" / key,
                                  rec, "parent", old.info.run_id if old is not None else None)
            except (FloatingPointError, ValueError, RuntimeError, OSError) as e:  # OSError: a full disk, say
                raise RunFailed(f"{spec.method}:{spec.variant} seed {spec.seed} failed: {e}. The {i} runs finished before "
                                f"it stay in the store (parent run {rec.run_id('parent')}) and the same command resumes "
                                f"from them; tables were not rewritten") from e
            shown = ", ".join(f"{k[5:]} {v:.4f}" for k, v in res.items() if k.startswith("eval/") and k[5:] in in_domain)
            tqdm.write(f"{spec.method}:{spec.variant} seed {spec.seed}: {spec.rounds} rounds, {res['cost/total_nfe']} NFE, "
                       f"train {res['time/train_s']:.1f} s, eval {res['time/eval_s']:.1f} s; {shown}")
        before = prior.data.metrics.get("wall_s", 0.0) if prior else 0.0
        rec.metrics("parent", {"wall_s": before + time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()})
    except BaseException:
        rec.end("parent", "FAILED")
        raise
    rec.end("parent")
    return rec.run_id("parent")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
