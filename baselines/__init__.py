"""The paper's baselines on the shared core; importing the package registers them (``g2rpo.registry``)."""
from g2rpo.registry import register

from .dancegrpo import DanceGRPO, DanceGRPOConfig
from .flowgrpo import FlowGRPO, FlowGRPOConfig
from .mixgrpo import MixGRPO, MixGRPOConfig

BASELINES = (
    register("flowgrpo", FlowGRPO, FlowGRPOConfig, "Flow-GRPO", order=30),
    register("dancegrpo", DanceGRPO, DanceGRPOConfig, "DanceGRPO", order=10),
    register("mixgrpo", MixGRPO, MixGRPOConfig, "MixGRPO", order=20),
)
"""The registry entries, in registration order: the one line a new baseline adds (README, "Adding a method")."""
