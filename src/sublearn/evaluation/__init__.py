"""Evaluation of students: reading and scoring their answers."""

from sublearn.evaluation.answers import count_matches, match_rate, matches, normalize_answer

__all__ = ["count_matches", "match_rate", "matches", "normalize_answer"]
