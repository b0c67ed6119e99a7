"""The benchmark: runner, tables, sweeps, performance. It runs every method, so it registers the baselines first."""
from baselines import BASELINES

__all__ = ["BASELINES"]
