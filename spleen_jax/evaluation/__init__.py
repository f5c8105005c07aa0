"""Evaluation reports: per-frame metrics, summaries, figures, folder input."""
