"""Export a trained policy in diffusers' format: its transformer via ``save_pretrained`` (safetensors) plus a sidecar.

The folder loads with ``FluxTransformer2DModel.from_pretrained(folder)`` / ``SD3Transformer2DModel.from_pretrained``
and drops into diffusers' pipelines; ``load_exported`` rebuilds the policy itself. The sidecar ``g2rpo_policy.json``
holds what the transformer config does not (latent shape, patch, guidance, timestep convention, method, round);
an SD3 policy's empty-prompt embeddings go to ``negative_prompt_embeds.safetensors``.

Atomicity: everything is written to a temporary folder beside the target, which then replaces it by two renames
(old -> ``.NAME.PID.export-old``, temp -> NAME) and the old one is deleted. A crash leaves the previous export or the
new one under NAME, never a half folder (a crash exactly between the two renames leaves NAME absent and the previous
export in ``.NAME.PID.export-old``, which the next export to the same place puts back before writing); other
temporaries of killed writers are removed by that next export.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from .files import alive
from .models.flux import FluxPolicy
from .models.sd3 import SD3Policy
from .policy import Cond, FlowPolicy

SIDECAR = "g2rpo_policy.json"
NEGATIVE = "negative_prompt_embeds.safetensors"
LORA_FILE = "pytorch_lora_weights.safetensors"


def _sidecar(policy: FlowPolicy, method: str | None, round_idx: int | None) -> dict:
    import diffusers

    meta = {"policy": type(policy).__name__, "transformer": type(policy.transformer).__name__,
            "latent_shape": list(policy.latent_shape), "timestep_convention": policy.timestep_convention.value}
    if isinstance(policy, FluxPolicy):
        meta |= {"patch": policy.patch, "guidance": policy.guidance}
    else:
        meta |= {"patch": policy.transformer.config.patch_size, "guidance_scale": policy.guidance_scale}
    return meta | {"method": method, "round": round_idx, "decoder": None if policy.decoder is None else
                   type(policy.decoder).__name__, "diffusers": diffusers.__version__}


def _remove_stale(folder: Path) -> None:
    """Delete temporaries of killed exports to ``folder`` (their pid is gone); a previous export moved aside by a
    writer killed between its two renames is put back if ``folder`` is absent."""
    for tmp in sorted(folder.parent.glob(f".{glob.escape(folder.name)}.*.export-*")):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not alive(int(pid)):
            if tmp.name.endswith("export-old") and not folder.exists():
                os.replace(tmp, folder)
            else:
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _folder_writer(folder: Path, marker: str, what: str):
    """Yields a temporary folder beside ``folder``; when the block completes it replaces ``folder`` by two renames
    (a directory cannot be renamed onto a non-empty one), and a failure puts the previous export back. Refuses to
    replace a folder without ``marker`` (one this module did not write)."""
    folder = Path(folder)
    if folder.exists() and not (folder / marker).is_file():  # never replace a folder this did not write
        raise FileExistsError(f"{folder} exists and is not {what} (no {marker}); choose another folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.export-tmp")
    old = folder.with_name(f".{folder.name}.{os.getpid()}.export-old")
    moved = False
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        yield tmp
        if folder.exists():
            os.replace(folder, old)
            moved = True
        os.replace(tmp, folder)
        moved = False
    finally:
        if moved:  # the new folder did not land: put the previous export back
            os.replace(old, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def export_diffusers(policy: FlowPolicy, folder: Path, method: str | None = None, round_idx: int | None = None) -> Path:
    """Write ``policy``'s transformer (diffusers ``save_pretrained``, safetensors) and its sidecar to ``folder``."""
    if not isinstance(policy, (FluxPolicy, SD3Policy)):
        raise TypeError(f"export_diffusers takes a FluxPolicy or SD3Policy, got {type(policy).__name__}")
    if getattr(policy.transformer, "peft_config", None):
        raise ValueError("the transformer carries LoRA adapters: export them with export_lora (diffusers' LoRA "
                         "format, loaded by the pipeline's load_lora_weights), or merge them first")
    with _folder_writer(folder, SIDECAR, "an export") as tmp:
        policy.transformer.save_pretrained(tmp, safe_serialization=True)
        if isinstance(policy, SD3Policy):
            neg = policy.negative
            save_file({"prompt_embeds": neg.tokens.detach().contiguous(),
                       "pooled_prompt_embeds": neg.pooled.detach().contiguous()}, str(tmp / NEGATIVE))
        (tmp / SIDECAR).write_text(json.dumps(_sidecar(policy, method, round_idx), indent=2) + "\n")
    return Path(folder)


def load_exported(folder: Path, decoder=None) -> FlowPolicy:
    """The policy written by ``export_diffusers`` (local folder, safetensors only). ``decoder`` is not exported."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / SIDECAR).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FileNotFoundError(f"{folder / SIDECAR} is missing or unreadable ({type(e).__name__}); "
                                f"folders are written by g2rpo.export.export_diffusers") from None
    kw = dict(use_safetensors=True, local_files_only=True)
    if meta["policy"] == "FluxPolicy":
        from diffusers import FluxTransformer2DModel

        transformer = FluxTransformer2DModel.from_pretrained(folder, **kw)
        return FluxPolicy(transformer, tuple(meta["latent_shape"]), meta["patch"], meta["guidance"],
                          meta["timestep_convention"], decoder)
    if meta["policy"] == "SD3Policy":
        from diffusers import SD3Transformer2DModel

        transformer = SD3Transformer2DModel.from_pretrained(folder, **kw)
        neg = load_file(str(folder / NEGATIVE))
        negative = Cond(tokens=neg["prompt_embeds"], pooled=neg["pooled_prompt_embeds"])
        return SD3Policy(transformer, tuple(meta["latent_shape"]), negative, meta["guidance_scale"],
                         meta["timestep_convention"], decoder)
    raise ValueError(f"{folder / SIDECAR}: unknown policy class {meta['policy']!r}")


def export_lora(policy: FlowPolicy, folder: Path) -> Path:
    """Write the policy's LoRA adapter in diffusers' LoRA format (``pytorch_lora_weights.safetensors`` via the
    pipeline class's ``save_lora_weights``), which ``FluxPipeline`` / ``StableDiffusion3Pipeline.load_lora_weights``
    load onto the base model. Written and replaced as ``export_diffusers`` writes."""
    from peft.utils import get_peft_model_state_dict

    if not getattr(policy.transformer, "peft_config", None):
        raise ValueError("the policy has no LoRA adapter; use export_diffusers for the full transformer")
    if isinstance(policy, FluxPolicy):
        from diffusers import FluxPipeline as Pipeline
    elif isinstance(policy, SD3Policy):
        from diffusers import StableDiffusion3Pipeline as Pipeline
    else:
        raise TypeError(f"export_lora takes a FluxPolicy or SD3Policy, got {type(policy).__name__}")
    with _folder_writer(folder, LORA_FILE, "a LoRA export") as tmp:
        # the metadata carries lora_alpha: without it diffusers assumes alpha = rank and loads a different scale
        config = next(iter(policy.transformer.peft_config.values())).to_dict()
        Pipeline.save_lora_weights(tmp, transformer_lora_layers=get_peft_model_state_dict(policy.transformer),
                                   transformer_lora_adapter_metadata=config)
    return Path(folder)
