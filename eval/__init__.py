"""Evaluation: deterministic generation and scoring of any checkpoint on any prompt set with any rewards
(``python -m eval.evaluate``), prompt sets and the statistics the tables use."""
