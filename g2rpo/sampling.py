"""Deterministic samplers on top of the policy: plain ODE sampling and branch-parallel completions.

``ode_sample`` is the anchor / evaluation sampler. ``complete_many`` finishes many chains that
each have their own sigma grid (MGAI completions of every member, granularity and k) in lockstep:
at each iteration every unfinished chain is evaluated in one batched call with per-sample
sigmas. ``complete_one`` is the one-chain-at-a-time reference the official code's loop amounts to.
"""
from __future__ import annotations

import torch

from .policy import Cond, FlowPolicy
from .sde import euler_step, predict_x0


def _velocity(policy: FlowPolicy, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, max_batch: int) -> torch.Tensor:
    """Policy velocity in chunks of at most ``max_batch`` rows (0 = one call)."""
    if max_batch <= 0 or x.shape[0] <= max_batch:
        return policy(x, sigma, cond)
    return torch.cat(
        [policy(x[i : i + max_batch], sigma[i : i + max_batch], cond[list(range(i, min(i + max_batch, len(x))))])
         for i in range(0, x.shape[0], max_batch)]
    )


@torch.no_grad()
def ode_sample(policy: FlowPolicy, x: torch.Tensor, sigmas: torch.Tensor, cond: Cond, max_batch: int = 0):
    """Euler ODE over the whole grid. Returns (image latents x0_hat of the last step, latents (N+1, B, ...),
    velocities (N, B, ...)). With sigma_N = 0 the last x0_hat equals the last Euler step."""
    xs, vs = [x.float()], []
    for i in range(len(sigmas) - 1):
        s = sigmas[i].expand(x.shape[0])
        v = _velocity(policy, xs[-1], s, cond, max_batch)
        vs.append(v)
        xs.append(euler_step(xs[-1], v, s, sigmas[i + 1]))
    x0 = predict_x0(xs[-2], vs[-1], sigmas[-2])
    return x0, torch.stack(xs), torch.stack(vs)


@torch.no_grad()
def complete_one(policy: FlowPolicy, x: torch.Tensor, grid: torch.Tensor, cond: Cond) -> torch.Tensor:
    """ODE along ``grid``, evaluating every point but the last; returns x0_hat of the last evaluation."""
    for i in range(len(grid) - 1):
        v = policy(x, grid[i].expand(x.shape[0]), cond)
        x0 = predict_x0(x, v, grid[i])
        x = euler_step(x, v, grid[i], grid[i + 1])
    return x0


def shared_evaluations(grids: list[torch.Tensor], source: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per iteration of ``complete_many``: for each row, the row whose evaluation it can reuse (itself if none).

    Rows with the same ``source`` (same start latents and conditioning) whose grids agree up to the current point hold
    the same latents there, so their velocities are equal: MGAI's completions of one member share their first two
    evaluations (every granularity's grid starts sigma[k+1], sigma[k+2]). ``None``: every row is its own source."""
    src = torch.arange(len(grids)) if source is None else source
    reps, width = [], max(len(g) for g in grids) - 1
    for it in range(width):
        first: dict[tuple, int] = {}
        rep = torch.arange(len(grids))
        for r, g in enumerate(grids):
            if len(g) - 1 > it:
                rep[r] = first.setdefault((int(src[r]), tuple(g[: it + 1].tolist())), r)
        reps.append(rep)
    return reps


def evaluations(grids: list[torch.Tensor], source: torch.Tensor | None = None) -> int:
    """Model evaluations ``complete_many`` makes for these grids and sources (the cost accounting counts with it)."""
    if source is None:
        return sum(len(g) - 1 for g in grids)
    rows = torch.arange(len(grids))
    steps = torch.tensor([len(g) - 1 for g in grids])
    return sum(int(((rep == rows) & (steps > it)).sum()) for it, rep in enumerate(shared_evaluations(grids, source)))


@torch.no_grad()
def complete_many(
    policy: FlowPolicy, x: torch.Tensor, grids: list[torch.Tensor], cond: Cond, max_batch: int = 0,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """``complete_one`` for every row of ``x`` with its own grid, batched across rows per iteration. With ``source``
    (rows of one source start from the same latents and conditioning) a velocity several rows share is evaluated
    once (``shared_evaluations``); the results are the same."""
    n = x.shape[0]
    steps = torch.tensor([len(g) - 1 for g in grids])
    if (steps < 1).any():
        raise ValueError("every completion grid needs at least two points")
    width = int(steps.max())
    padded = torch.zeros(n, width + 1)
    for r, g in enumerate(grids):
        padded[r, : len(g)] = g
    reps = shared_evaluations(grids, source) if source is not None else None
    x, x0 = x.float().clone(), torch.empty_like(x, dtype=torch.float32)
    for it in range(width):
        rows = torch.nonzero(steps > it).squeeze(1)
        s, s_next = padded[rows, it], padded[rows, it + 1]
        if reps is None:
            v = _velocity(policy, x[rows], s, cond[rows.tolist()], max_batch)
        else:  # evaluate the rows that are their own representative, hand the velocity to the rows reusing it
            rep = reps[it][rows]
            own = torch.nonzero(rep == rows).squeeze(1)
            slot = torch.full((n,), -1, dtype=torch.long)
            slot[rows[own]] = torch.arange(len(own))
            v = _velocity(policy, x[rows[own]], s[own], cond[rows[own].tolist()], max_batch)[slot[rep]]
        x0[rows] = predict_x0(x[rows], v, s)
        x[rows] = euler_step(x[rows], v, s, s_next)
    return x0
