"""Evaluation beyond accuracy: compression-identified exemplars and subgroup audits."""
