"""Evaluation: zero-shot classification, retrieval and captioning metrics."""
