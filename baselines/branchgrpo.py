"""BranchGRPO (Li et al., arXiv 2509.06040): tree rollouts, per-depth advantages of the leaves' mean reward, pruning.

Read from the official code (github.com/Fredreic1849/BranchGRPO, ``fastvideo/train_branchgrpo_flux.py``, a fork of
DanceGRPO's FastVideo trainer; defaults from ``scripts/finetune/finetune_flux_branchgrpo_8gpus.sh``):
  * tree rollout (``run_tree_sample_step``): every prompt grows one tree from x_T; at each of the N steps every
    current node takes one Dance-SDE step (DanceGRPO's ``flux_step`` with ``sde_solver``: our ``sde_step`` with the
    constant g = eta); at a split step (``--tree_split_points``, 0,3,6,9 of 20) each node instead samples two children
    from that step's mean with noise scaled by ``--tree_split_noise_scale`` (4.0), while their log-prob keeps the
    unscaled std eta sqrt(dt) (as the official code scores it at rollout and in training). 2^4 = 16 leaves; a leaf's
    image is x0_hat of the last step, as DanceGRPO's.
  * rewards and advantages (``compute_node_rewards_from_leaves``, ``compute_hierarchical_advantages_by_depth``): an
    internal node's reward is the mean of its leaves' rewards; the nodes at each depth are z-scored among themselves
    (unbiased std + 1e-8; 0 where the depth has one node or std < 1e-6), per tree.
  * training (``train_one_step_tree``): every edge parent -> child is a transition whose advantage is the child's,
    clamped to ``adv_clip_max``; optional depth pruning (edges into the listed depths are not trained; the window
    slides one depth shallower every ``depth_pruning_slide_interval`` iterations, down to ``depth_pruning_stop_depth``)
    and width pruning of the edges after the last split (mode 1: the best ``width_pruning_ratio`` of each last-split
    branch; mode 2: the best and worst of them all), both only in the first ``pruning_step_ratio`` of training. The
    edges are shuffled per GPU and an optimizer step is taken every ``gradient_accumulation_steps`` of them; each
    edge's loss is divided by ``gradient_accumulation_steps`` times the GPU's trained edges per tree.

Rows are edges (n = 1), prompt-major, then step, then child index (trees of a prompt in order, a node's b children
adjacent). Cost per prompt (``tree_counts``): the rollout evaluates every node once per step it starts, sum_i m_i with
m_i the nodes at depth i (the official loop calls the transformer once per node and step, the split reusing it:
1 + 3*2 + 3*4 + 3*8 + 10*16 = 203 for its 20 steps); training one forward+backward per trained edge (the official
calls ``grpo_one_step`` once per edge: 218 unpruned); G images scored.

Generalisations where our shared settings leave the official recipe (each a config value, see the README):
``num_generations`` G = T * b^s leaves per prompt, with T trees per prompt (official: T = 1, b = 2, G = 16); the
default split points are the official ones rescaled to the shared step count; with T > 1 the depth groups pool the
prompt's trees.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import MethodConfig, OptimConfig, SharedConfig
from g2rpo.method import Cost, Layout, Method, Rollout, Transitions
from g2rpo.sampling import _velocity
from g2rpo.sde import dance_sde_g, predict_x0, sde_step

from .trajectory import check_positive_ints

OFFICIAL_SPLIT_POINTS, OFFICIAL_STEPS = (0, 3, 6, 9), 20
"""The official script's ``TREE_SPLIT_POINTS="0,3,6,9"`` of its ``--sampling_steps 20``."""


def default_split_points(num_steps: int, num_generations: int, branch_factor: int = 2) -> tuple[int, ...]:
    """Split points when none are given: s of the official points rescaled to ``num_steps`` (floor(p * N / 20), each
    at least one past the previous, at most N - 1), s the largest count <= 4 with b^s dividing G."""
    s = 0
    if branch_factor > 1:
        while s < len(OFFICIAL_SPLIT_POINTS) and num_generations % branch_factor ** (s + 1) == 0:
            s += 1
    points: list[int] = []
    for p in OFFICIAL_SPLIT_POINTS[:s]:
        q = max(p * num_steps // OFFICIAL_STEPS, points[-1] + 1 if points else 0)
        if q > num_steps - 1:
            break
        points.append(q)
    return tuple(points)


def tree_counts(split_points, num_steps: int, trees: int, branch_factor: int) -> list[int]:
    """m_d, the nodes per prompt at depth d = 0..N (depth d: after d steps): T * b^(splits at steps < d)."""
    splits = set(split_points)
    m = [trees]
    for i in range(num_steps):
        m.append(m[-1] * (branch_factor if i in splits else 1))
    return m


def parent_index(j: torch.Tensor, split: bool, branch_factor: int) -> torch.Tensor:
    """Index at depth i of the parent of node j at depth i + 1 (a split at step i makes b adjacent children)."""
    return j // branch_factor if split else j


def node_rewards(leaf_rewards: torch.Tensor, nodes: int) -> torch.Tensor:
    """(P, L) leaf rewards -> (P, nodes) rewards of one depth's nodes: each the mean of its L / nodes leaves (a node's
    leaves are a contiguous block); non-finite leaves left out (a node with none is NaN)."""
    P, L = leaf_rewards.shape
    return leaf_rewards.view(P, nodes, L // nodes).nanmean(-1)


def depth_zscore(r: torch.Tensor, eps: float = 1e-8, min_std: float = 1e-6) -> torch.Tensor:
    """(P, m) rewards of one depth's nodes -> advantages: (r - mean) / (std + eps) over the depth (unbiased std), 0
    where the depth has fewer than two finite nodes or std < ``min_std`` (the official rule)."""
    if r.shape[-1] < 2:
        return torch.zeros_like(r)
    ok = torch.isfinite(r)
    n = ok.sum(-1, keepdim=True)
    r0 = torch.where(ok, r, 0.0)
    mean = r0.sum(-1, keepdim=True) / n.clamp(min=1)
    std = (torch.where(ok, (r0 - mean) ** 2, 0.0).sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
    return torch.where((n >= 2) & (std >= min_std), A.group_zscore(r, eps), 0.0)


def depth_advantages(leaf_rewards: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Per-depth advantages of every node: (P, counts[d]) for d = 0..N, from (P, L) leaf rewards."""
    return [depth_zscore(node_rewards(leaf_rewards, m)) for m in counts]


def active_pruning_depths(depths, current_step: int, slide: bool, interval: int, stop_depth: int) -> set[int]:
    """Depths whose incoming edges are not trained at training iteration ``current_step`` (1-based): ``depths``, slid
    one shallower every ``interval`` iterations while the shallowest stays >= ``stop_depth``."""
    depths = sorted(depths)
    if not depths:
        return set()
    shift = min(current_step // interval, max(0, depths[0] - stop_depth)) if slide else 0
    return {d - shift for d in depths}


def prune_now(current_step: int, max_steps: int, pruning_step_ratio: float) -> bool:
    """Whether pruning applies at iteration ``current_step`` (1-based) of ``max_steps``: while <= int(max * ratio)."""
    return current_step <= int(max_steps * pruning_step_ratio)


def width_keep(adv: list[float], mode: int, ratio: float, groups: list[int] | None = None) -> list[bool]:
    """Which of the last layer's edges (in the official order, advantages ``adv``) width pruning keeps. Mode 1: in each
    group (``groups``, the last-split branch of each edge) the best max(1, int(size * ratio)); mode 2: of them all the
    best k // 2 and the worst k - k // 2, k = max(2, int(len * ratio)). Ties keep the earlier edge first (a stable sort,
    as the official ``sorted``)."""
    keep = [mode == 0] * len(adv)
    if mode == 1:
        for g in dict.fromkeys(groups):
            idx = [i for i, gi in enumerate(groups) if gi == g]
            for i in sorted(idx, key=lambda i: adv[i], reverse=True)[: max(1, int(len(idx) * ratio))]:
                keep[i] = True
    elif mode == 2:
        order = sorted(range(len(adv)), key=lambda i: adv[i], reverse=True)
        k = max(2, int(len(adv) * ratio))
        for i in order[: k // 2] + (order[-(k - k // 2):] if k - k // 2 else []):
            keep[i] = True
    return keep


@dataclass
class BranchGRPOConfig(MethodConfig):
    """BranchGRPO's knobs under the official flag names; defaults from ``finetune_flux_branchgrpo_8gpus.sh``."""

    eta: float = 0.3
    """Constant Dance-SDE coefficient g on every step (official `--eta`)."""
    tree_split_points: tuple[int, ...] | None = None
    """Steps at which every node branches (official `--tree_split_points`, "0,3,6,9" of 20 steps); None = those
    rescaled to the shared steps, as many as make b^s divide G (``default_split_points``)."""
    tree_split_noise_scale: float = 4.0
    """Factor on the noise of a split step's children; their log-prob keeps the unscaled std (official)."""
    branch_factor: int = 2
    """Children per node at a split (the official code hard-codes 2); 1 = chains."""
    init_same_noise: bool = True
    """Every tree of a prompt starts at the prompt's member-0 x_T (official `--init_same_noise`)."""
    depth_pruning: tuple[int, ...] = ()
    """Depths whose incoming edges are not trained (official `--depth_pruning`, empty in the script)."""
    depth_pruning_slide: bool = True
    """Slide the depth-pruning window one depth shallower every interval (official `--depth_pruning_slide`)."""
    depth_pruning_slide_interval: int = 30
    """Training iterations (rounds) per slide (official `--depth_pruning_slide_interval`)."""
    depth_pruning_stop_depth: int | None = None
    """Shallowest depth the window slides to; None = the last split point (official fallback; the script's 9)."""
    width_pruning_mode: int = 0
    """0 off; 1 the best of each last-split branch's edges; 2 the best and worst of all last-layer edges."""
    width_pruning_ratio: float = 0.5
    """Share of the last layer's edges width pruning keeps (official `--width_pruning_ratio`)."""
    pruning_step_ratio: float = 1.0
    """Pruning applies in the first int(rounds * ratio) rounds (official `--pruning_step_ratio`)."""
    gradient_accumulation_steps: int = 12
    """Edges (transitions) per GPU accumulated into one optimizer step (official)."""
    world_size: int = 8
    """GPUs of the recipe: a step trains gradient_accumulation_steps x world_size edges, each GPU holding a prompt-major
    block of the round (official 8 GPUs, 2 prompts each)."""
    tree_loss_norm: bool = True
    """Scale each edge's loss by 1 / (trained edges per prompt), as the official division by its per-tree transitions
    (the optimizer step's mean over edges is the shared loop's)."""
    clip_range: float = 1e-3
    """PPO ratio clip (official `--clip_range 1e-3`)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=1e-4, max_grad_norm=1.0))
    """AdamW (official: lr 1e-5, wd 1e-4, betas (0.9, 0.999), eps 1e-8, grad clip 1)."""

    def __post_init__(self):
        if self.tree_split_points is not None:
            self.tree_split_points = tuple(int(k) for k in self.tree_split_points)
        self.depth_pruning = tuple(int(d) for d in self.depth_pruning)


class BranchGRPO(Method):
    name = "branchgrpo"
    config_class = BranchGRPOConfig
    cfg: BranchGRPOConfig

    def __init__(self, cfg: BranchGRPOConfig | None = None) -> None:
        super().__init__(cfg)
        self._loss_scale = 1.0
        self._prune = True

    # -- the tree ---------------------------------------------------------------------------------------------------
    def split_points(self, shared: SharedConfig) -> tuple[int, ...]:
        p = self.cfg.tree_split_points
        return default_split_points(shared.num_steps, shared.num_generations, self.cfg.branch_factor) if p is None else p

    def trees(self, shared: SharedConfig) -> int:
        """T, trees per prompt: G / b^s."""
        return shared.num_generations // self.cfg.branch_factor ** len(self.split_points(shared))

    def counts(self, shared: SharedConfig) -> list[int]:
        return tree_counts(self.split_points(shared), shared.num_steps, self.trees(shared), self.cfg.branch_factor)

    def stop_depth(self, shared: SharedConfig) -> int:
        s = self.cfg.depth_pruning_stop_depth
        return s if s is not None else max(self.split_points(shared), default=0)

    def pruned_depths(self, shared: SharedConfig, round_idx: int) -> set[int]:
        cfg = self.cfg
        if not prune_now(round_idx + 1, shared.rounds, cfg.pruning_step_ratio):
            return set()
        return active_pruning_depths(cfg.depth_pruning, round_idx + 1, cfg.depth_pruning_slide,
                                     cfg.depth_pruning_slide_interval, self.stop_depth(shared))

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        cfg, N, G = self.cfg, shared.num_steps, shared.num_generations
        check_positive_ints(cfg, "branch_factor", "gradient_accumulation_steps", "world_size",
                            "depth_pruning_slide_interval")
        if cfg.eta <= 0:
            raise ValueError(f"eta must be > 0, got {cfg.eta}")
        if cfg.tree_split_noise_scale < 0:
            raise ValueError(f"tree_split_noise_scale must be >= 0, got {cfg.tree_split_noise_scale}")
        pts = self.split_points(shared)
        if list(pts) != sorted(set(pts)) or any(not 0 <= p < N for p in pts):
            raise ValueError(f"tree_split_points {pts} must be distinct, increasing steps in [0, {N - 1}]")
        if G % cfg.branch_factor ** len(pts):
            raise ValueError(f"num_generations G={G} must be a multiple of branch_factor^splits = "
                             f"{cfg.branch_factor}^{len(pts)} (the leaves of one tree)")
        if any(not 1 <= d <= N for d in cfg.depth_pruning):
            raise ValueError(f"depth_pruning {cfg.depth_pruning} must be depths in [1, {N}]")
        if cfg.width_pruning_mode not in (0, 1, 2):
            raise ValueError(f"width_pruning_mode must be 0, 1 or 2, got {cfg.width_pruning_mode!r}")
        if not 0 < cfg.width_pruning_ratio <= 1:
            raise ValueError(f"width_pruning_ratio must be in (0, 1], got {cfg.width_pruning_ratio}")
        if cfg.pruning_step_ratio < 0:
            raise ValueError(f"pruning_step_ratio must be >= 0, got {cfg.pruning_step_ratio}")

    # -- rollout ----------------------------------------------------------------------------------------------------
    def rollout(self, policy, cond, init_noise, noise, shared, round_idx=0) -> Rollout:
        cfg, b = self.cfg, self.cfg.branch_factor
        sigmas = shared.sigmas()
        N, (P, G), shape = len(sigmas) - 1, init_noise.shape[:2], init_noise.shape[2:]
        splits, T, m = set(self.split_points(shared)), self.trees(shared), self.counts(shared)
        g = dance_sde_g(sigmas[:-1], cfg.eta)
        # one (N, G) block of noise per prompt, as DanceGRPO draws it; step i's m_{i+1} children take its first ones
        z = noise((N, G, *shape), dim=1)  # (N, P, G, ...)
        x = (init_noise[:, :1].expand(P, T, *shape) if cfg.init_same_noise else init_noise[:, :T]).float()
        xs, xn, lps, ks, x0 = [], [], [], [], None
        for i in range(N):
            mi, mc = m[i], m[i + 1]
            rows_cond = cond[torch.arange(P).repeat_interleave(mi).tolist()]
            s = sigmas[i].expand(P * mi)
            v = _velocity(policy, x.reshape(P * mi, *shape), s, rows_cond, shared.max_batch).view(P, mi, *shape)
            par = parent_index(torch.arange(mc), i in splits, b)
            xp, vp = x[:, par], v[:, par]  # (P, mc, ...) each child's parent
            scale = cfg.tree_split_noise_scale if i in splits else 1.0
            out = sde_step(xp.reshape(P * mc, *shape), vp.reshape(P * mc, *shape), sigmas[i], sigmas[i + 1], g[i],
                           noise=z[i, :, :mc].reshape(P * mc, *shape) * scale)
            xs.append(xp)
            xn.append(out.sample.view(P, mc, *shape))
            lps.append(out.log_prob.view(P, mc))
            ks.append(torch.full((mc,), i))
            if i == N - 1:
                x0 = predict_x0(xp.reshape(P * mc, *shape), vp.reshape(P * mc, *shape), sigmas[i])
            x = xn[-1]
        E = sum(m[1:])  # edges per prompt
        tr = Transitions(
            prompt=torch.arange(P).repeat_interleave(E),
            k=torch.cat(ks).repeat(P),
            x=torch.cat(xs, 1).reshape(P * E, *shape),
            sigma=sigmas[torch.cat(ks)].repeat(P),
            sigma_next=sigmas[torch.cat(ks) + 1].repeat(P),
            g=g[torch.cat(ks)].repeat(P),
            x_next=torch.cat(xn, 1).reshape(P * E, 1, *shape),
            log_prob_old=torch.cat(lps, 1).reshape(P * E, 1),
        )
        self._prune = prune_now(round_idx + 1, shared.rounds, cfg.pruning_step_ratio)
        pruned = self.pruned_depths(shared, round_idx)
        if pruned:
            tr.mask = ~torch.isin(tr.k + 1, torch.tensor(sorted(pruned))).view(-1, 1)
        return Rollout(images=policy.decode(x0), image_prompt=torch.arange(P).repeat_interleave(G), transitions=tr,
                       layout=Layout(prompts=P, generations=G, steps=E))

    # -- advantages and update --------------------------------------------------------------------------------------
    def _tree(self, rollout: Rollout) -> tuple[int, list[int], set[int]]:
        """(P, m, splits) from the config and the view's layout (N from the rows' steps)."""
        lay = rollout.layout
        tr = rollout.transitions
        N = int(tr.k[: lay.steps].max()) + 1
        pts = self.cfg.tree_split_points
        pts = default_split_points(N, lay.generations, self.cfg.branch_factor) if pts is None else pts
        T = lay.generations // self.cfg.branch_factor ** len(pts)
        return lay.prompts, tree_counts(pts, N, T, self.cfg.branch_factor), set(pts)

    def advantages(self, rollout, rewards, weights) -> dict:
        P, m, _ = self._tree(rollout)
        G = rollout.layout.generations
        per = {name: depth_advantages(r.view(P, G), m) for name, r in rewards.items()}  # per reward, per depth
        adv = torch.cat([A.combine({name: a[d] for name, a in per.items()}, weights) for d in range(1, len(m))], 1)
        adv = A.clamp(adv, self.cfg.adv_clip_max)  # (P, E): each edge gets its child's advantage
        rollout.transitions.adv = adv.reshape(-1, 1)
        return {"adv_abs_mean": adv.abs().mean().item(),
                "adv_clipped_frac": (adv.abs() >= self.cfg.adv_clip_max).float().mean().item()}

    def width_mask(self, rollout: Rollout) -> torch.Tensor:
        """(R, 1) bool: the edges width pruning keeps (all outside the last layer, every edge after the last split);
        candidates taken per prompt in the official order (branch by branch, step by step)."""
        P, m, splits = self._tree(rollout)
        tr, E = rollout.transitions, rollout.layout.steps
        keep = torch.ones(P * E, dtype=torch.bool)
        if self.cfg.width_pruning_mode == 0 or not splits:
            return keep.view(-1, 1)
        last = max(splits)
        off = [sum(m[1 : i + 1]) for i in range(len(m) - 1)]  # first row of step i within a prompt
        trained = tr.trained()[:, 0]
        for p in range(P):
            # edges of steps > last, branch j (= node index at depth last + 1) by branch, then by step
            cand = [p * E + off[i] + j for j in range(m[last + 1]) for i in range(last + 1, len(m) - 1)]
            cand = [r for r in cand if trained[r]]  # depth pruning comes first
            kept = width_keep([float(tr.adv[r, 0]) for r in cand], self.cfg.width_pruning_mode,
                              self.cfg.width_pruning_ratio, [(r - p * E - off[int(tr.k[r])]) for r in cand])
            for r, k in zip(cand, kept):
                keep[r] = k
        return keep.view(-1, 1)

    def update_groups(self, rollout, gen) -> list[torch.Tensor]:
        """Width pruning (while pruning applies), then the trained edges of each world_size block shuffled and dealt
        into optimizer steps of gradient_accumulation_steps per block (all of them at once when the blocks do not
        divide the round)."""
        tr, P = rollout.transitions, rollout.layout.prompts
        if self._prune and self.cfg.width_pruning_mode:
            keep = self.width_mask(rollout)
            tr.mask = keep if tr.mask is None else tr.mask & keep
        rows = torch.nonzero(tr.trained()[:, 0]).view(-1)
        self._loss_scale = 1.0 / max(1, len(rows) // P) if self.cfg.tree_loss_norm else 1.0
        return self.deal(rows, tr.prompt[rows], P, gen)

    def deal(self, rows: torch.Tensor, prompt: torch.Tensor, P: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Shuffle ``rows`` per GPU block (prompt-major) and split them into optimizer steps."""
        W, gas = self.cfg.world_size, self.cfg.gradient_accumulation_steps
        if W > 1 and P % W == 0:
            blocks = [rows[prompt // (P // W) == w] for w in range(W)]
            blocks = [bl[torch.randperm(len(bl), generator=gen)] for bl in blocks]
            n = max(-(-len(bl) // gas) for bl in blocks)
            return [torch.cat([bl[s * gas : (s + 1) * gas] for bl in blocks]) for s in range(n)]
        return list(rows[torch.randperm(len(rows), generator=gen)].split(gas * W))

    def loss_weight(self, tr, rows):
        return None if not self.cfg.tree_loss_norm else torch.full((len(rows), 1), self._loss_scale)

    def optimizer_steps(self, shared):
        P, W, gas = shared.prompts_per_round, self.cfg.world_size, self.cfg.gradient_accumulation_steps
        E = sum(self.counts(shared)[1:])
        if W > 1 and P % W == 0:
            return -(-(P // W) * E // gas)
        return -(-P * E // (gas * W))

    def cost(self, shared):
        """Per prompt: every node once per step it starts (rollout), every trained edge of the first round (depth
        pruning at round 0; width pruning keeps its closed-form count), G images."""
        m = self.counts(shared)
        pruned = self.pruned_depths(shared, 0)
        train = sum(m[d] for d in range(1, len(m)) if d not in pruned)
        cfg, pts = self.cfg, self.split_points(shared)
        if cfg.width_pruning_mode and pts and prune_now(1, shared.rounds, cfg.pruning_step_ratio):
            last, N = max(pts), shared.num_steps
            depths = [d for d in range(last + 2, N + 1) if d not in pruned]  # edges of steps > last
            n = len(depths) * m[last + 1]
            if n:
                if cfg.width_pruning_mode == 1:
                    kept = m[last + 1] * max(1, int(len(depths) * cfg.width_pruning_ratio))
                else:
                    k = max(2, int(n * cfg.width_pruning_ratio))
                    kept = min(n, k)
                train -= n - kept
        return Cost(nfe_rollout=sum(m[:-1]), nfe_train=train, images_scored=shared.num_generations)
