"""LoRA through peft on a policy's diffusers transformer, Flow-GRPO's KL reference, adapter files.

No call to ``add_lora`` means full fine-tuning (the default everywhere). ``add_lora`` injects one peft LoRA
adapter (named "default") with diffusers' ``add_adapter`` and freezes every other weight of the policy, so the
Trainer's AdamW (built over ``requires_grad`` parameters) sees the adapter only.

Official configurations (``LORA_PRESETS``), all with B = 0 at init so the adapted model starts as the base:
- Flow-GRPO FLUX (``scripts/train_flux.py``): r 64, alpha 128, ``init_lora_weights="gaussian"``, attention
  q/k/v/out of both streams plus both feed-forwards (12 module names). This is the default.
- Flow-GRPO SD3.5 (``scripts/train_sd3.py``): r 32, alpha 64, gaussian init, the 8 attention projections.
- DanceGRPO FLUX (``fastvideo/train_grpo_flux_lora.py``): r 128, alpha 256, peft's default init (kaiming A),
  ``to_k, to_q, to_v, to_out.0`` only.

``reference_policy`` is what Flow-GRPO's KL term compares against: the base model. With LoRA it is a view that
runs the policy's own module with the adapters disabled (``transformer.disable_adapter()`` in the official code),
so no weights are copied; without LoRA it is a frozen deep copy.
"""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import CheckpointError, read_state
from ..files import atomic
from ..policy import Cond, FlowPolicy

ADAPTER = "default"

FLOWGRPO_FLUX_TARGETS = (
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)
FLOWGRPO_SD3_TARGETS = (
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v",
)
DANCEGRPO_FLUX_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")

LORA_PRESETS: dict[str, dict] = {
    "flowgrpo-flux": dict(rank=64, alpha=128, target_modules=FLOWGRPO_FLUX_TARGETS, init="gaussian"),
    "flowgrpo-sd3": dict(rank=32, alpha=64, target_modules=FLOWGRPO_SD3_TARGETS, init="gaussian"),
    "dancegrpo-flux": dict(rank=128, alpha=256, target_modules=DANCEGRPO_FLUX_TARGETS, init=True),
}
"""Official LoRA settings by name: ``add_lora(policy, **LORA_PRESETS["dancegrpo-flux"])``."""


def _transformer(policy: FlowPolicy):
    tr = getattr(policy, "transformer", None)
    if tr is None or not hasattr(tr, "add_adapter"):
        raise TypeError(f"{type(policy).__name__} has no diffusers transformer with peft support (policy.transformer)")
    return tr


def has_lora(policy: FlowPolicy) -> bool:
    """Whether ``add_lora`` (or another peft injection) gave the policy's transformer an adapter."""
    tr = getattr(policy, "transformer", None)
    return bool(getattr(tr, "_hf_peft_config_loaded", False)) and ADAPTER in getattr(tr, "peft_config", {})


def _tuner_layers(module: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def adapter_parameters(policy: FlowPolicy) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by their name in the policy (``transformer.<...>.lora_A.default.weight``)."""
    ids = set()
    for layer in _tuner_layers(_transformer(policy)):
        for attr in layer.adapter_layer_names:
            sub = getattr(layer, attr)
            if ADAPTER in sub:
                item = sub[ADAPTER]
                ids.update(id(p) for p in ([item] if isinstance(item, torch.nn.Parameter) else item.parameters()))
    return {n: p for n, p in policy.named_parameters() if id(p) in ids}


def add_lora(policy: FlowPolicy, rank: int = 64, alpha: float = 128, target_modules=FLOWGRPO_FLUX_TARGETS,
             init: bool | str = "gaussian", dropout: float = 0.0) -> FlowPolicy:
    """Inject a peft LoRA adapter into ``policy.transformer`` and freeze everything else; returns the policy.

    Defaults are Flow-GRPO's official FLUX config (see ``LORA_PRESETS`` for the others). Call it before building
    the Trainer: the optimizer is built over the parameters that require grad at that moment.
    """
    from peft import LoraConfig

    tr = _transformer(policy)
    if has_lora(policy):
        raise ValueError("the policy already has a LoRA adapter")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=init,
                     lora_dropout=dropout)
    tr.add_adapter(cfg, adapter_name=ADAPTER)
    trainable = {id(p) for p in adapter_parameters(policy).values()}
    if not trainable:
        raise ValueError(f"no module of {type(tr).__name__} matched target_modules {list(target_modules)}")
    for p in policy.parameters():
        p.requires_grad_(id(p) in trainable)
    return policy


@contextlib.contextmanager
def adapters_disabled(policy: FlowPolicy):
    """Runs the block on the base model; afterwards every tuner layer's enabled flag and every parameter's
    ``requires_grad`` are exactly as before, also when the block raises (peft's enable/disable toggles
    ``requires_grad`` of adapter weights as a side effect, so both are restored explicitly)."""
    tr = _transformer(policy)
    layers = _tuner_layers(tr)
    was_disabled = [layer.disable_adapters for layer in layers]
    grads = [(p, p.requires_grad) for p in policy.parameters()]
    try:
        tr.disable_adapters()
        yield
    finally:
        if not any(was_disabled):
            tr.enable_adapters()
        else:
            for layer, off in zip(layers, was_disabled):
                layer.enable_adapters(not off)
        for p, g in grads:
            p.requires_grad_(g)


class BaseModelView(FlowPolicy):
    """The base model under a LoRA policy: the same module, adapters disabled, no gradients, its own call counts.

    The policy is held outside the module tree (no registered submodule), so this view has no parameters of its
    own and ``.eval()``/``.requires_grad_()`` on it never reach the policy.
    """

    def __init__(self, policy: FlowPolicy) -> None:
        super().__init__()
        object.__setattr__(self, "_policy", policy)
        self.latent_shape = policy.latent_shape
        self.timestep_convention = policy.timestep_convention

    @property
    def device(self) -> torch.device:
        return self._policy.device

    @property
    def precision(self) -> str:
        return self._policy.precision

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        with torch.no_grad(), adapters_disabled(self._policy):
            return self._policy._velocity(x, t, cond)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self._policy.decode(x0)


def reference_policy(policy: FlowPolicy) -> FlowPolicy:
    """Flow-GRPO's KL reference: the base model. LoRA: ``BaseModelView`` of the same module (no copy); full
    fine-tuning: a frozen deep copy of the policy as it is now."""
    if has_lora(policy):
        return BaseModelView(policy)
    return copy.deepcopy(policy).eval().requires_grad_(False)


def _peft_key(name: str) -> str:
    """Parameter name in the policy -> peft's adapter key (``transformer.`` and the adapter name dropped)."""
    name = name.removeprefix("transformer.")
    return name.replace(f".{ADAPTER}.", ".")


def _lora_config(policy: FlowPolicy) -> dict:
    cfg = _transformer(policy).peft_config[ADAPTER]
    return {"rank": int(cfg.r), "alpha": float(cfg.lora_alpha), "target_modules": sorted(cfg.target_modules)}


def save_adapter(policy: FlowPolicy, path: Path) -> Path:
    """The adapter weights only, as safetensors with peft's key names (as ``get_peft_model_state_dict``) and the
    LoRA config (rank, alpha, targets) in the file's metadata. Written atomically."""
    if not has_lora(policy):
        raise ValueError("the policy has no LoRA adapter to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {_peft_key(n): p.detach().contiguous().cpu() for n, p in adapter_parameters(policy).items()}
    meta = {"format": "g2rpo-lora", "lora": json.dumps(_lora_config(policy))}
    with atomic(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


_FOREIGN_PREFIXES = ("base_model.model.", "transformer.")  # PeftModel.save_pretrained / diffusers save_lora_weights


def load_adapter(policy: FlowPolicy, path: Path) -> FlowPolicy:
    """Load adapter weights saved by ``save_adapter`` into a policy that has the same adapter (``add_lora`` with the
    same settings). Strict: the keys and shapes must match exactly and, when the file records its LoRA config,
    rank and alpha too; otherwise CheckpointError with one line. Files whose keys all carry one of the official
    codes' prefixes (``base_model.model.``, ``transformer.``) are accepted with the prefix removed."""
    path = Path(path)
    origin = "adapter files are written by g2rpo.models.lora.save_adapter"
    if not has_lora(policy):
        raise CheckpointError(f"cannot load {path}: the policy has no LoRA adapter (call add_lora with the settings "
                              f"the adapter was trained with first)")
    state = read_state(path, origin)
    for prefix in _FOREIGN_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    params = {_peft_key(n): p for n, p in adapter_parameters(policy).items()}
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    shape = [k for k in params if k in state and tuple(state[k].shape) != tuple(params[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(f"{path} does not match the policy's LoRA adapter: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(shape)} wrong-shape tensors (first: "
                              f"{(missing or unexpected or shape)[0]}); {origin}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "lora" in meta:
        saved, ours = json.loads(meta["lora"]), _lora_config(policy)
        diff = [k for k in ("rank", "alpha") if saved.get(k) != ours[k]]
        if diff:
            raise CheckpointError(f"{path} was trained with LoRA {', '.join(f'{k}={saved.get(k)}' for k in diff)} but "
                                  f"the policy has {', '.join(f'{k}={ours[k]}' for k in diff)}; {origin}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k])
    return policy
