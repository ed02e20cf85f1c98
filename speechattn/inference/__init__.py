"""Inference on new audio: whole-utterance and exact chunked long-form labelling (``longform``)."""
