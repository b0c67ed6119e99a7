"""The core: the shared rollout-and-training loop, the method contract and registry, G²RPO, schedules and SDE math,
the tiers (pocket and paper models, rewards), MLflow plumbing and on-disk state."""
