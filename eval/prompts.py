"""Evaluation prompt sets: the tier's own, user files, HPDv2's test set and the HPSv2 benchmark's four styles.

Every prompt carries a group (the style for the HPSv2 benchmark, a JSON object's key, else the set's name); summaries
are given per group and overall. Nothing is downloaded: the HPDv2/HPSv2 files are read from where the user has them.
"""
from __future__ import annotations

import json
from pathlib import Path

from g2rpo.files import read_lines

TIER_SETS = ("heldout", "train")
HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
"""The HPSv2 benchmark's prompt files (``<style>.json``, 800 prompts each, a JSON list of strings)."""


class PromptError(ValueError):
    """A prompt set that cannot be read; reported as one line."""


def read_prompt_set(spec: str, tier) -> list[tuple[str, str]]:
    """(prompt, group) pairs of ``spec``: 'heldout' | 'train' | a folder holding the HPSv2 benchmark's style files |
    a .json file (list of strings, list of objects with a 'prompt' field as in HPDv2's test.json, or an object
    mapping group -> list of strings) | any other text file, one prompt per line (e.g. HPDv2's 400 test prompts)."""
    if spec in TIER_SETS:
        return [(p, spec) for p in (tier.eval_prompts if spec == "heldout" else tier.train_prompts)]
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = [s for s in HPS_STYLES if not (path / f"{s}.json").is_file()]
        if missing:
            raise PromptError(f"--prompts {spec}: a folder must hold the HPSv2 benchmark's {', '.join(HPS_STYLES)} .json "
                              f"files; missing {', '.join(missing)}")
        return [(p, s) for s in HPS_STYLES for p in _strings(_json(path / f"{s}.json"), path / f"{s}.json")]
    if path.suffix == ".json":
        data = _json(path)
        if isinstance(data, dict):
            return [(p, str(g)) for g, ps in data.items() for p in _strings(ps, path)]
        return [(p, path.stem) for p in _strings(data, path)]
    try:
        lines = read_lines(path)
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"--prompts {spec!r} is neither {' nor '.join(TIER_SETS)} nor a readable UTF-8 file or folder "
                          f"({type(e).__name__}: {getattr(e, 'strerror', None) or e})") from None
    if not lines:
        raise PromptError(f"--prompts {spec!r} holds no prompts (one per line)")
    return [(p, path.stem) for p in lines]


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PromptError(f"--prompts {path} is not readable JSON ({type(e).__name__}: {e})") from None


def _strings(items, path: Path) -> list[str]:
    """Prompts of a JSON list: strings, or objects with a 'prompt' field."""
    if not isinstance(items, list) or not items:
        raise PromptError(f"--prompts {path}: expected a non-empty JSON list of prompts")
    out = []
    for i, x in enumerate(items):
        p = x.get("prompt") if isinstance(x, dict) else x
        if not isinstance(p, str) or not p.strip():
            raise PromptError(f"--prompts {path}: item {i} is neither a prompt string nor an object with a 'prompt'")
        out.append(p.strip())
    return out
