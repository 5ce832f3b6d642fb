"""Distillation: a teacher-labelled stream of fresh queries (``sampler``) and the training loop (``train``)."""
