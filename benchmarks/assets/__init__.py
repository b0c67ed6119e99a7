"""Tools that make the pocket tier's committed assets (``g2rpo/pocket/assets/``): the generators, reward heads and cards.

``python -m benchmarks.assets.pretrain`` makes the generators, ``python -m benchmarks.assets.train_rewards`` the reward
heads; the library only reads what they wrote."""
