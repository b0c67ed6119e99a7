"""The paper's baselines on the shared core; importing the package registers them (``g2rpo.registry``)."""
from g2rpo.registry import register

from .branchgrpo import BranchGRPO
from .dancegrpo import DanceGRPO
from .diffusionnft import DiffusionNFT
from .flowgrpo import FlowGRPO
from .flowgrpo_fast import FlowGRPOFast
from .mixgrpo import MixGRPO
from .tempflowgrpo import TempFlowGRPO

BASELINES = (
    register("flowgrpo", FlowGRPO, "Flow-GRPO", order=30),
    register("flowgrpo-fast", FlowGRPOFast, "Flow-GRPO-Fast", family="flowgrpo", order=35, default=False),
    register("dancegrpo", DanceGRPO, "DanceGRPO", order=10),
    register("mixgrpo", MixGRPO, "MixGRPO", order=20),
    register("tempflowgrpo", TempFlowGRPO, "TempFlow-GRPO", order=40, default=False),
    register("branchgrpo", BranchGRPO, "BranchGRPO", order=45, default=False),
    register("diffusionnft", DiffusionNFT, "DiffusionNFT", order=50, default=False),
)
"""The registry entries, in registration order: the one line a new baseline adds (docs/adding-a-method.md)."""
