"""The per-round code both entry points share: ``benchmarks.run`` (each run of a plan) and ``benchmarks.train``.

A ``Driver`` runs a ``Trainer``'s rounds, keeps the counters every run logs (model evaluations so far, training
seconds without the time spent on learning curves), saves the whole state after every round in the one format
(``g2rpo.train_state``) and continues from it when the same run starts again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from g2rpo.distributed import DataParallel
from g2rpo.loop import Trainer
from g2rpo.train_state import load_train_state, save_train_state


class Driver:
    def __init__(self, trainer: Trainer, state_dir: Path | None = None, dp: DataParallel | None = None) -> None:
        self.trainer, self.state_dir, self.dp = trainer, state_dir, dp or trainer.dp
        self.cum_nfe = 0
        """Model evaluations of every round so far (rollout, training, KL reference)."""
        self.train_s = 0.0
        """Seconds of training so far: rounds and their logging; not compiling, not state saves (harness I/O, the same
        for every method: a DCP save takes ~0.16 s on the pocket model, ~10% of a G2RPO round), not ``paused``."""
        self._t = time.perf_counter()

    def resume(self) -> bool:
        """Continue from the state under ``state_dir`` if there is one (its counters too); False if none."""
        if self.state_dir is None:
            return False
        found = load_train_state(self.trainer, self.state_dir, {"cum_nfe": 0.0, "train_s": 0.0})
        if found is None:
            return False
        self.cum_nfe, self.train_s = int(found["cum_nfe"]), found["train_s"]
        self._t = time.perf_counter()
        return True

    def paused(self, fn: Callable[[], object]):
        """Run ``fn`` (a learning-curve point, an evaluation) without counting its seconds as training."""
        self.train_s += time.perf_counter() - self._t
        try:
            return fn()
        finally:
            self._t = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds up to now."""
        return self.train_s + time.perf_counter() - self._t

    def rounds(self, until: int, before: Callable[[int], object] | None = None) -> Iterator[dict]:
        """Run rounds up to ``until``, yielding each round's metrics (FloatingPointError on a non-finite loss);
        ``before(r)`` runs paused ahead of round r. The state is saved (paused) once the caller has taken (logged) a
        round's metrics, so a killed run repeats at most that round and its records."""
        while self.trainer.round_idx < until:
            if before is not None:
                self.paused(lambda: before(self.trainer.round_idx))
            m = self.trainer.train(1)[0]  # FloatingPointError on a non-finite loss
            self.cum_nfe += m["nfe_rollout"] + m["nfe_train"] + m["nfe_reference"]
            yield m
            if self.state_dir is not None:
                counters = {"cum_nfe": self.cum_nfe, "train_s": self.elapsed()}
                self.paused(lambda: save_train_state(self.trainer, self.state_dir, self.dp, counters))
