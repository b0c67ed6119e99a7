"""Data parallelism over torch.distributed (``torchrun``), with the single-process result as its definition.

With W ranks and P prompts per round (P % W == 0), rank r rolls out prompts [r·P/W, (r+1)·P/W) of the round; noise
is drawn per prompt (``loop.PromptNoise``), so each rank's rollout is the single-process rollout of its prompts.
Rewards and the small per-row tensors are all-gathered into a *global view* of the round, on which every rank
computes the same advantages (Flow-GRPO's global std included) and the same optimizer-step groups. Each rank then
trains its own rows of every group with the loss normalised by the group's global count, and gradients are summed
across ranks before each step, so every rank takes the step one process would take on all P prompts. The big
tensors (latents, images) never leave their rank. Every method's rows are prompt-major, which makes a rank's rows
one contiguous block of the global view.

With ``fsdp`` the policy's parameters, gradients and optimizer states are sharded over the ranks (FSDP2, full
shard: each transformer block, then the transformer). The reduce-scatter then sums the gradients (divide factor 1),
and since every forward and backward is a collective, ranks holding fewer rows of a step run zero-weight padding
chunks so that all ranks make the same number of calls.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from .method import Rollout, Transitions


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the job: rank and world size (1 = no torch.distributed)."""

    rank: int = 0
    world: int = 1
    fsdp: bool = False
    """Shard parameters, gradients and optimizer states over the ranks (FSDP2 full shard) instead of replicating them."""

    @classmethod
    def from_env(cls, backend: str | None = None, fsdp: bool = False) -> "DataParallel":
        """The torchrun job this process belongs to (process group initialised once), or a single process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        dist = torch.distributed
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(cls().device)  # before NCCL starts, so each process talks from its own GPU
            dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
        return cls(dist.get_rank(), dist.get_world_size(), fsdp)

    @property
    def device(self) -> torch.device:
        """Where this process's models run: GPU ``LOCAL_RANK`` when CUDA is available (one GPU per process), else the
        CPU. Latents, noise and schedules stay on the CPU (see ``FlowPolicy.forward``)."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def sharded(self) -> bool:
        """Parameters are sharded (FSDP with more than one rank)."""
        return self.fsdp and self.world > 1

    def wrap(self, *policies: torch.nn.Module) -> None:
        """Under FSDP, shard each policy's transformer in place (every block of ``transformer_blocks`` and
        ``single_transformer_blocks``, then the root); a transformer already sharded is left alone."""
        if not self.sharded:
            return
        # not at the top: only FSDP needs them; fsdp takes ~0.6 s to import and torch builds without distributed lack it
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard

        mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (self.world,))
        for policy in policies:
            tr = policy.transformer
            if isinstance(tr, FSDPModule):
                continue
            for name in ("transformer_blocks", "single_transformer_blocks"):
                for block in getattr(tr, name, ()):
                    fully_shard(block, mesh=mesh)
            fully_shard(tr, mesh=mesh)
            for m in tr.modules():  # the setting is per FSDP module, not inherited from the root
                if isinstance(m, FSDPModule):
                    m.set_gradient_divide_factor(1.0)  # a sum, as one process accumulates: the loss is normalised already
                    m.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM

    def full_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with full tensors; under FSDP gathered to rank 0 (a collective; others get {})."""
        if not self.sharded:
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def max(self, n: int) -> int:
        """The largest ``n`` over ranks."""
        t = torch.tensor([n])
        if self.world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t)

    def close(self) -> None:
        """Leave the job cleanly: wait for every rank, then tear the process group down (a process exiting with it still
        up can abort in gloo's threads, 'terminate called without an active exception', as seen once in CI)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    @property
    def main(self) -> bool:
        """Rank 0 alone logs and writes results."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items (the round's prompts)."""
        if n % self.world:
            raise ValueError(f"prompts_per_round = {n} must be divisible by the number of processes {self.world}")
        size = n // self.world
        return range(self.rank * size, (self.rank + 1) * size)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` (same shape on all) concatenated along dim 0, in rank order."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over ranks (a new tensor)."""
        t = t.clone()
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum gradients over ranks in one flat buffer; a rank that trained no row this step contributes zeros. Under
        FSDP the reduce-scatter has already summed them."""
        if self.world == 1 or self.sharded:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def global_view(self, ro: Rollout, rewards: dict[str, torch.Tensor]) -> tuple[Rollout, dict[str, torch.Tensor]]:
        """The round as one process would see it, minus latents and images: what ``advantages`` and
        ``update_groups`` read (layout, row prompts and steps, old log-probs, masks) and the rewards of all images."""
        if self.world == 1:
            return ro, rewards
        tr, layout = ro.transitions, ro.layout
        offset = self.rank * layout.prompts  # prompt-major rows: this rank's are one block
        view_tr = Transitions(prompt=self.gather(tr.prompt + offset), k=self.gather(tr.k), x=None, sigma=None,
                              sigma_next=None, g=None, x_next=None, log_prob_old=self.gather(tr.log_prob_old),
                              mask=None if tr.mask is None else self.gather(tr.mask))
        view = Rollout(images=None, image_prompt=self.gather(ro.image_prompt + offset), transitions=view_tr,
                       layout=dataclasses.replace(layout, prompts=layout.prompts * self.world))
        return view, {m: self.gather(v) for m, v in rewards.items()}

    def localise(self, view: Rollout, ro: Rollout, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copy this rank's block of the view's advantages and mask into ``ro`` and map the global row groups to its
        local rows (a group may hold none of them; the rank still joins that step's gradient sum)."""
        if self.world == 1:
            return groups
        n = len(ro.transitions.prompt)
        lo, hi = self.rank * n, (self.rank + 1) * n
        tr, v = ro.transitions, view.transitions
        tr.adv = None if v.adv is None else v.adv[lo:hi]
        tr.mask = None if v.mask is None else v.mask[lo:hi]
        return [g[(g >= lo) & (g < hi)] - lo for g in groups]
