"""Inference over Kaldi data directories for any task (:mod:`speechattn.inference.driver`)."""
