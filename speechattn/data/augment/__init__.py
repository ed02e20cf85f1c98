"""Waveform augmentation of speaker-training crops (see :mod:`speechattn.data.augment.pipeline`).

Modules: ``mixing`` (SNR scaling, looping, reverberation), ``nonspeech`` (pauses from alignments or energy),
``sources`` (speech bank, non-speech pool, noise files), ``corpora`` (MUSAN and RIRS_NOISES readers),
``rir`` (synthetic RIR set with pyroomacoustics; RIR bank), ``pipeline`` (config + per-crop augmenter).
"""
