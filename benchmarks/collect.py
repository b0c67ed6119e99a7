"""Tables from evaluations of models trained apart: the paper tier's way to Table 1.

At scale each method and seed trains in its own torchrun job (``benchmarks/launch_paper.sh``) and each saved
policy is scored by ``python -m eval.evaluate``; this gathers those evaluation folders into the runner's tables:

    python -m benchmarks.collect results/eval/base results/eval/g2rpo-seed0 results/eval/g2rpo-seed1 ... --out results/paper

A folder's ``metadata.jsonl`` names the checkpoint it scored; the checkpoint's sidecar (written by
``benchmarks.train --save`` and by the runner) gives method, variant, seed, rewards trained on and cost; ``scores.csv``
gives the per-image scores. Writes Table 1 (mean ± std over seeds, NFE per round and in total; wall-clock is not
known here), the paired comparison with the base model when a base evaluation is among the folders, the G²RPO
ablation tables when their variants are, and a README stating the command. Folders that were not evaluated alike
(prompts, noise seed, steps, shift, images per prompt, rewards) or models trained on different rewards or other
comparable shared settings (the sidecars' ``comparable_digest``: all but seed, rounds and what bounds memory) are
refused: such numbers do not compare.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import pandas as pd

from g2rpo.checkpoint import CheckpointError, read_meta
from g2rpo.config import PER_RUN, SharedConfig
from g2rpo.errors import one_line
from g2rpo.files import write_text
from g2rpo.flags import FlagError, check_writable
from g2rpo.tracking import flatten

from .plan import BASE
from .render import write_all
from .table import headers, main_table, paired_from_scores, rank, sweep_tables

ALIKE = ("prompt", "seed", "steps", "shift", "image_index", "tier")
"""metadata.jsonl fields every folder must share, image by image, for its scores to compare."""


class CollectError(ValueError):
    """Evaluations that cannot be put in one table; reported as one line, exit code 2."""


def trained_with(side: dict) -> dict:
    """What a sidecar records of the shared settings that every model of a table must share: the model, the rewards,
    the model settings but the LoRA (the adapter the method trains, ``Method.lora``: per method) and, when recorded,
    the ``comparable_digest`` of the whole comparable block (sidecars written before it existed have none: then only
    what they record is compared)."""
    rec = {"model": side.get("tier"), "rewards": dict(side["in_domain"])} | {
        f"settings.{k}": v for k, v in side.get("settings", {}).items() if k != "lora"}
    return rec | ({"comparable_digest": side["comparable_digest"]} if "comparable_digest" in side else {})


def refuse_incomparable(folder: Path, rec: dict, first: Path, ref: dict) -> None:
    """CollectError unless the model of ``folder`` was trained with the comparable shared settings of ``first``'s."""
    both = [k for k in rec if k in ref]
    diff = ", ".join(k for k in both if k != "comparable_digest" and rec[k] != ref[k])
    if diff:
        diff += " differ"
    elif "comparable_digest" in both and rec["comparable_digest"] != ref["comparable_digest"]:
        unrecorded = [f for f in SharedConfig.__dataclass_fields__ if f not in PER_RUN and f not in ("model", "rewards")
                      and f"settings.{f}" not in rec]
        diff = (f"comparable digests {rec['comparable_digest']} and {ref['comparable_digest']}: one of "
                f"{', '.join(unrecorded)} differs")
    if diff:
        raise CollectError(f"{folder}: its model was trained with other shared settings than {first}'s ({diff}); a "
                           f"table compares only models whose shared blocks differ at most in {', '.join(PER_RUN)}")


def read_evaluation(folder: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict | None]:
    """(table row, per-image scores, the image metadata, ``trained_with`` its sidecar or None for the base model)."""
    try:
        meta = pd.DataFrame([json.loads(ln) for ln in (folder / "metadata.jsonl").read_text().splitlines() if ln.strip()])
        scores = pd.read_csv(folder / "scores.csv")
        rewards = list(dict.fromkeys(pd.read_csv(folder / "summary.csv")["reward"]))
        identity = str(meta["checkpoint"].iloc[0])
        row = {"folder": str(folder)} | {f"eval/{r}": float(scores[r].mean()) for r in rewards}
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise CollectError(f"{folder} is not an evaluation written by python -m eval.evaluate "
                           f"({one_line(e)})") from None
    if identity == "base":
        return row | {"method": BASE, "variant": "default", "seed": 0, "nfe_per_round": math.nan,
                      "nfe_per_round_official": math.nan, "cost/total_nfe": 0.0}, scores, meta, None
    path = Path(identity.split(" sha256:")[0])
    try:
        side = read_meta(path)
        info = {"method": side["method"], "variant": side.get("variant", "default"), "seed": int(side["seed"]),
                "weights": side.get("weights", "live")}
        nfe = float(side["nfe_per_round"])
    except CheckpointError as e:
        raise CollectError(f"{folder}: {e}") from None
    except KeyError as e:
        raise CollectError(f"{folder}: the sidecar of {path} has no {e.args[0]!r}; it predates benchmarks.collect: "
                           "save the model again with benchmarks.train --save") from None
    knobs = side.get("knobs", {})
    return (row | info | {"nfe_per_round": nfe, "cost/total_nfe": nfe * int(side["rounds"]),
                          "nfe_per_round_official": float(side.get("nfe_per_round_official", nfe))} | flatten(knobs, "knobs."),
            scores, meta, trained_with(side))


def collect(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, list[pd.DataFrame]], list[str], list[str]]:
    """(rows, per-prompt scores per method, in-domain rewards, out-of-domain rewards); CollectError if they do not compare."""
    rows, scores, first, in_domain, seen, trained = [], {}, None, None, {}, None
    for folder in folders:
        row, per_image, meta, rec = read_evaluation(folder)
        ind = rec and rec["rewards"]
        key = (row["method"], row["variant"], row["seed"])
        if key in seen:
            raise CollectError(f"{folder} and {seen[key]} both evaluate {key[0]} {key[1]} seed {key[2]}; give one")
        seen[key] = folder
        alike = meta[[c for c in ALIKE if c in meta]].reset_index(drop=True)
        if first is None:
            first = (folder, alike, set(k for k in row if k.startswith("eval/")))
        elif not alike.equals(first[1]) or set(k for k in row if k.startswith("eval/")) != first[2]:
            raise CollectError(f"{folder} was not evaluated as {first[0]} (other prompts, noise seed, steps, shift, "
                               f"images per prompt or rewards); run eval.evaluate on both with the same flags")
        if ind is not None:
            if in_domain is not None and ind != in_domain:
                raise CollectError(f"{folder}: its model was trained on {ind}, others on {in_domain}; they do not compare")
            in_domain = ind
            trained = trained or (folder, rec)
            refuse_incomparable(folder, rec, *trained)
        rows.append(row)
        scores.setdefault(row["method"], []).append(per_image.groupby("prompt_index").mean(numeric_only=True))
    if in_domain is None:
        raise CollectError("no trained model among the folders (only base evaluations)")
    rewards = [k[len("eval/"):] for k in first[2] if not k.startswith("eval/stat/")]
    ind = [r for r in in_domain if r in rewards]
    ood = sorted(r for r in rewards if r not in in_domain)
    return pd.DataFrame(rows), scores, ind, ood


def build(folders: list[Path], out: Path, command: str) -> list[Path]:
    df, scores, ind, ood = collect(folders)
    df["order"] = df.method.map(rank)
    df = df.sort_values(["order", "variant", "seed"]).reset_index(drop=True)
    stats = sorted(c[len("eval/"):] for c in df.columns if c.startswith("eval/stat/"))
    cols = {c: h for c, h in headers(ind, ood, stats).items() if c in df}
    out.mkdir(parents=True, exist_ok=True)
    files = main_table(df, cols, out)
    files += paired_from_scores(dict(sorted(scores.items(), key=lambda kv: df.order[df.method == kv[0]].iloc[0])),
                                ind, ood, out)
    files += sweep_tables(df, cols, out)
    seeds = df[df.method != BASE].groupby(["method", "variant"]).seed.nunique()
    lines = ["# Benchmark results collected from separate evaluations", "", "Made by:", "", "```bash", command, "```", "",
             f"- training seeds per row: {', '.join(sorted(set(map(str, seeds.values))))}; in-domain rewards: "
             f"{','.join(ind)}; out-of-domain: {','.join(ood) or 'none'}",
             "- wall-clock per run is not known here (each model trained in its own job): see each run's MLflow record",
             "- evaluations: " + ", ".join(f"`{f}`" for f in df.folder), ""]
    lines += [f.read_text() + "\n" for f in files if f.suffix == ".md"]
    files.append(write_text(out / "README.md", "\n".join(lines)))
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.collect", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/paper-tier.md")
    ap.add_argument("folders", nargs="+", type=Path, help="output folders of python -m eval.evaluate, the base among them")
    ap.add_argument("--out", type=Path, default=Path("results/collected"))
    a = ap.parse_args(argv)
    command = "python -m benchmarks.collect " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))

    def make():
        check_writable(a.out, "--out")
        return build(a.folders, a.out, command)

    return write_all(make, a.out, (CollectError, FlagError))


if __name__ == "__main__":
    sys.exit(main())
