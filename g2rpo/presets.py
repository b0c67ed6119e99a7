"""Named settings. A preset gives the shared block, per-method-family knob overrides and evaluation settings.

``paper`` is the G2RPO paper's FLUX.1-dev setting (algorithms.md §7): N = 16, shift 3, G = 12,
a = 0.7, M = 0..7, Lambda = {1, 2, 3} (the official scripts use {1, 2}: pass
``granular_list=(1, 2)`` to match them), lr 2e-6, clip 1e-4, advantage clip 5, HPS + CLIP rewards,
evaluation on 400 held-out prompts with 50 ODE steps. Knobs a preset does not name keep each
method's official default; every value is recorded with each run.

``pocket`` (the default) is the paper's setting scaled to two CPU cores: the pocket generator, N = 10, G = 8,
two prompts per round, M = {0..3} (the first 40% of steps, as 0..7 of 16), Lambda = {1, 2} (official scripts), on
the attribute-binding task ("a {colour} {object} emoji", rule reward ``pocket_binding``; objects of the held-out
prompts are never trained on), each method family at the learning rate ``benchmarks.sweep`` selected for it,
3 seeds, 4 images per held-out prompt, learning curves on a fixed set every 4 rounds. ``pocket-emoji`` is the
earlier default (emoji captions, the learned alignment + category heads as HPS + CLIP, one learning rate), kept
because its result is the negative one the binding task answers: no method moved those rewards beyond noise.
``scenes`` is the same shared block on the pocket scenes task: GenEval's six skills on rendered
shapes (``g2rpo/pocket/scenes.py``), the 48 px scenes generator, trained on the rule verifier's partial credit
(``scenes``) and scored on its strict pass (``scenes_strict``) per skill, held-out and in-distribution apart;
``scenes-duo`` trains on the verifier and the learned scenes head at once, as the paper's HPS + CLIP block.
``smoke`` runs every code path in seconds on the tiny in-code model.

``flowgrpo-sd35`` is Flow-GRPO's own SD3.5-medium PickScore setting (not in the G2RPO paper): 512 px, diffusers'
flow-match grid with N = 10 ("denoising reduction") fed float timesteps, true CFG 4.5, G = 24, 48 prompts per
round on 32 GPUs, PickScore/26, LoRA r 32 / alpha 64 in bf16, KL beta 0.01, EMA for evaluation, 40 ODE steps at
evaluation. The official runs have no fixed length (stopped by hand): 300 rounds here. The other methods run in it
with their own defaults, their per-GPU accumulation counted over its 32 GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import OptimConfig, SharedConfig
from .ema import EMAConfig


@dataclass
class EvalSettings:
    """How a preset evaluates base and trained models."""

    num_prompts: int = 0
    """Held-out prompts scored (the first n of the tier's held-out list; 0 = all)."""
    steps: int = 0
    """ODE steps of the main evaluation (0 = the shared num_steps)."""
    grid_prompts: int = 6
    """Held-out prompts shown in the sample grid."""
    seed: int = 0
    """Seed of the per-prompt evaluation noise (the same for every method and run)."""
    images_per_prompt: int = 1
    """Images per held-out prompt (noise streams 0..k-1); a prompt's score is their mean."""
    curve_every: int = 0
    """Evaluate on the fixed curve set every this many rounds (0 = no learning curves)."""
    curve_prompts: int = 0
    """Prompts of each split (held-out, train) in the curve set: the first n of each (0 = all)."""
    accuracy_threshold: float = 0.0
    """The curve's held-out strict pass that counts as reached (the NFE/seconds-to-accuracy table; 0 = no table)."""


@dataclass
class Preset:
    """A named benchmark configuration."""

    shared: SharedConfig
    """Settings shared by every method."""
    knobs: dict[str, dict] = field(default_factory=dict)
    """Method-family knob overrides, e.g. {'g2rpo': {'granular_list': (1, 2, 3)}}; the ``ALL_FAMILIES`` entry ('*')
    applies to every family first."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    """Evaluation settings."""
    seeds: int = 2
    """Training seeds per (method, variant) by default."""


ALL_FAMILIES = "*"
"""Key of ``Preset.knobs`` whose knobs every method family takes before its own entry (``g2rpo.registry.knobs_for``):
how a shared rule reaches a method registered after the preset was written."""

POCKET_LR = 3e-5
"""The one learning rate of the ``pocket-emoji`` preset (all methods), from a G2RPO-only sweep on that task; on
``pocket``, the rate of a family ``benchmarks.sweep`` has not selected one for (a method added later), never its
official rate (tuned for another model size)."""

POCKET_LRS = {"g2rpo": 3e-5, "flowgrpo": 3e-5, "dancegrpo": 3e-5, "mixgrpo": 3e-5,
              # the families registered later, swept by the same rule for results/pocket-all
              "tempflowgrpo": 3e-5, "diffusionnft": 3e-5, "branchgrpo": 3e-5}
"""Each method family's learning rate on the pocket preset, selected by ``python -m benchmarks.sweep`` (the rule and
the numbers: ``results/pocket/sweep.md``, the later families' under ``results/pocket-all/``; ``tests/test_sweep.py``
checks these equal their selections). The official
rates are tuned for a 12B FLUX (G2RPO 2e-6, DanceGRPO/MixGRPO 1e-5) or a LoRA (Flow-GRPO 3e-4) and none transfers
to a 2.4M-parameter model; one rate chosen for one method would favour that method."""

SCENES_LRS = {"g2rpo": 1e-5, "flowgrpo": 1e-5, "dancegrpo": 1e-5, "mixgrpo": 1e-5,
              "tempflowgrpo": 3e-5, "branchgrpo": 3e-5, "diffusionnft": 3e-5}
"""Each family's learning rate on the scenes presets, selected by ``python -m benchmarks.sweep --preset scenes`` over
every registered family (``results/scenes/sweep.md``; ``tests/test_sweep.py`` checks these equal its selection)."""

ACCURACY_THRESHOLD = 0.2
"""The scenes' fixed accuracy: the held-out strict pass of the curve set a method must reach (``time_to_accuracy``);
set before any method trained on the committed generator, at about its base pass plus 0.1."""

POCKET_KNOBS = {"g2rpo": {"eta_step_list": (0, 1, 2, 3), "granular_list": (1, 2)},
                # every method fine-tunes all of the 2.4M-parameter pocket model (equal settings), Flow-GRPO included
                "flowgrpo": {"use_lora": False}, "diffusionnft": {"use_lora": False},
                # one process, one group per optimizer step: 2 steps per round of 2 prompts x 8 (the official
                # recipes take 3 (DanceGRPO) and 4 (MixGRPO) steps per round of 16 and 32 prompts x 12)
                "dancegrpo": {"gradient_accumulation_steps": 8, "world_size": 1},
                "mixgrpo": {"gradient_accumulation_steps": 8, "world_size": 1},
                # likewise one tree's edges per step: the pocket tree (splits 0, 1, 3 of 10 steps, 8 leaves) has 66
                "branchgrpo": {"gradient_accumulation_steps": 66, "world_size": 1}}


def _with_lr(knobs: dict[str, dict], lrs: dict[str, float], default: float) -> dict[str, dict]:
    """Each family's knobs (those in ``knobs`` or ``lrs``) with its learning rate; every other family
    (``ALL_FAMILIES``) at ``default``."""
    return {ALL_FAMILIES: {"optim": OptimConfig(lr=default)}} | {
        f: knobs.get(f, {}) | {"optim": OptimConfig(lr=lrs.get(f, default))} for f in {**knobs, **lrs}}


def _scenes(rewards: dict[str, float]) -> Preset:
    """The scenes presets: the pocket shared block on the scenes tier, 32 rounds, curves with the strict pass."""
    return Preset(
        shared=SharedConfig(model="pocket-scenes", num_steps=10, shift=3.0, num_generations=8, prompts_per_round=2,
                            rounds=32, rewards=rewards, compile=True),
        knobs=_with_lr(POCKET_KNOBS, SCENES_LRS, POCKET_LR),
        eval=EvalSettings(num_prompts=0, grid_prompts=8, images_per_prompt=4, curve_every=4, curve_prompts=24,
                          accuracy_threshold=ACCURACY_THRESHOLD),
        seeds=3,
    )


DEFAULT_PRESET = "scenes"
"""The preset ``python -m benchmarks.run`` runs without ``--preset``: GenEval's skills on the scenes task (the binding
task of ``pocket`` and its committed ``results/pocket/`` stay one flag away)."""

PRESETS: dict[str, Preset] = {
    "pocket": Preset(
        shared=SharedConfig(model="pocket-binding", num_steps=10, shift=3.0, num_generations=8, prompts_per_round=2,
                            rounds=32, rewards={"pocket_binding": 1.0}, compile=True),
        knobs=_with_lr(POCKET_KNOBS, POCKET_LRS, POCKET_LR),
        eval=EvalSettings(num_prompts=0, grid_prompts=8, images_per_prompt=4, curve_every=4),
        seeds=3,
    ),
    "scenes": _scenes({"scenes": 1.0}),
    "scenes-duo": _scenes({"scenes": 1.0, "scenes_align": 1.0}),
    "pocket-emoji": Preset(
        shared=SharedConfig(model="pocket", num_steps=10, shift=3.0, num_generations=8, prompts_per_round=2,
                            rounds=24, rewards={"pocket_align": 1.0, "pocket_category": 1.0}, compile=True),
        knobs=_with_lr(POCKET_KNOBS, {}, POCKET_LR),
        eval=EvalSettings(num_prompts=0, grid_prompts=8),
        seeds=2,
    ),
    "paper": Preset(
        # 16 prompts per round: the paper's one prompt per GPU on 16 GPUs (torchrun splits a round's prompts)
        shared=SharedConfig(model="flux-dev", num_steps=16, shift=3.0, num_generations=12, prompts_per_round=16,
                            rounds=300, rewards={"hps": 1.0, "clip": 1.0}, precision="bf16"),
        # DanceGRPO as its 16-GPU script (the defaults: 3 steps of 4 x 16 samples); MixGRPO's per-GPU accumulation 3 on
        # these 16 GPUs (4 steps of 3 x 16; its own 32-GPU run steps on 96); Flow-GRPO trains its FLUX LoRA (default)
        knobs={"g2rpo": {"eta": 0.7, "eta_step_list": tuple(range(8)), "granular_list": (1, 2, 3)},
               "mixgrpo": {"world_size": 16}},
        eval=EvalSettings(num_prompts=400, steps=50),
        seeds=1,
    ),
    "flowgrpo-sd35": Preset(
        # Flow-GRPO's own PickScore setting (config/grpo.py pickscore_sd3, 32 GPUs): 48 groups of 24 per epoch
        shared=SharedConfig(model="sd35", num_steps=10, shift=3.0, schedule="flow_match", timestep_convention="float",
                            num_generations=24, prompts_per_round=48, rounds=300, rewards={"pickscore_26": 1.0},
                            precision="bf16", lora="flowgrpo-sd3"),
        # two micro-batches of 9 per GPU make one optimizer step there, so its EMA moves twice at a moving step; 32 GPUs
        # of 36 samples, each GPU's kept count made divisible by its 4 batches
        # DanceGRPO's per-GPU accumulation on these 32 GPUs too (its 16-GPU script's 4: 9 steps of 128 per round)
        knobs={"flowgrpo": {"beta": 0.01, "ema": EMAConfig(repeats=2), "world_size": 32, "num_batches_per_epoch": 4},
               "dancegrpo": {"world_size": 32}},
        eval=EvalSettings(num_prompts=0, steps=40),
        seeds=1,
    ),
    "smoke": Preset(
        shared=SharedConfig(model="tiny", num_steps=6, shift=3.0, num_generations=3, prompts_per_round=2, rounds=2,
                            rewards={"brightness": 1.0, "redness": 1.0}),
        knobs={"g2rpo": {"eta_step_list": (0, 1, 2)}, "dancegrpo": {"gradient_accumulation_steps": 3, "world_size": 1},
               "mixgrpo": {"gradient_accumulation_steps": 3, "world_size": 1, "window_size": 2}},
        eval=EvalSettings(num_prompts=4, grid_prompts=4, images_per_prompt=2, curve_every=1),
        seeds=2,
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
