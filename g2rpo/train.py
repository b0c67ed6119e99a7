"""Train one method on one preset: ``python -m g2rpo.train --method g2rpo --preset smoke``.

The benchmark runner drives many of these; this entry point is for a single run and for checking a config. Under
``torchrun --nproc_per_node W -m g2rpo.train ...`` the round's prompts are split over W processes
(``g2rpo.distributed``) with the single-process result; rank 0 alone prints and writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from .presets import preset
from .registry import METHODS, make_method


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="g2rpo", help=f"one of {', '.join(METHODS)}")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--eta-step-list", type=_ints, help="G2RPO noise-injection steps M, e.g. 0,1,2,3")
    ap.add_argument("--granular-list", type=_ints, help="G2RPO granularities Lambda, e.g. 1,2,3")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    ap.add_argument("--save", help="write the trained policy here (safetensors + JSON sidecar)")
    ap.add_argument("--dry-run", action="store_true", help="print the config and the cost per prompt and round, run nothing")
    a = ap.parse_args(argv)
    try:
        p = preset(a.preset)
        overrides = {k: v for k, v in (("eta_step_list", a.eta_step_list), ("granular_list", a.granular_list)) if v}
        method = make_method(a.method, p.knobs, **overrides)
        shared = dataclasses.replace(p.shared, **{k: v for k, v in (("rounds", a.rounds), ("seed", a.seed)) if v is not None})
        method.validate(shared)
    except (KeyError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plan = {"method": method.name, "shared": dataclasses.asdict(shared), "shared_digest": shared.digest(),
            "knobs": dataclasses.asdict(method.cfg), "cost_per_prompt_round": dataclasses.asdict(method.cost(shared))}
    if a.dry_run:
        print(json.dumps(plan, indent=2, default=str))
        return 0
    from .distributed import DataParallel
    from .loop import Trainer
    from .tiers import load_tier

    try:
        tier = load_tier(shared.model)
    except KeyError as e:
        print(f"error: {e.args[0]}; use --dry-run to see the plan", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    try:
        dp = DataParallel.from_env()
        trainer = Trainer(tier.make_policy(), tier.text, method, tier.rewards, shared, tier.train_prompts, dp)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say = print if dp.main else (lambda *_: None)
    say(json.dumps({k: plan[k] for k in ("method", "shared_digest", "cost_per_prompt_round")} | {"world": dp.world}))
    for m in trainer.train():
        say(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()}))
    if a.save and dp.main:
        from .checkpoint import save_policy

        save_policy(trainer.policy, a.save, {"tier": shared.model, "method": method.name, "rounds": trainer.round_idx,
                                             "in_domain": shared.rewards, "world": dp.world})
    return 0


if __name__ == "__main__":
    sys.exit(main())
