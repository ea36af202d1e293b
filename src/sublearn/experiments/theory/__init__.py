"""Empirical check of Theorem 1: one distillation step moves the student toward the teacher."""
