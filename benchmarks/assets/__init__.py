"""Tools that make the pocket tier's committed assets (``g2rpo/pocket/assets/``): ``python -m benchmarks.assets.pretrain``
(the generator) and ``python -m benchmarks.assets.train_rewards`` (the reward heads). The library only reads what they
wrote."""
