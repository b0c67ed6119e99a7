"""The pocket tier: a real text-to-image flow model and real reward models that run offline on a CPU.

``model.load_pocket()`` gives (FluxPolicy, MiniLMEncoder); ``rewards.pocket_rewards()`` the rewards. Data are
Twemoji graphics (CC-BY 4.0, Twitter, Inc. and other contributors); see assets/MODEL_CARD.md and REWARD_CARD.md.
"""
