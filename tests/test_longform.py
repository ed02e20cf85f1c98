"""Chunked long-form inference equals whole-utterance inference; bounded reads; corrupt blocks; CTM runs."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from speechattn.data.audio import AudioError, iter_audio_blocks
from speechattn.features.extract import FeatureConfig, compute_features, feature_context_frames
from speechattn.data.framing import frame_span_samples, num_frames
from speechattn.tasks.longform import iter_chunked_logits, iter_chunked_predictions, runs_to_ctm

SR = 16000
torch.set_num_threads(1)


class ConvStack(nn.Module):
    """Toy frame model with a known asymmetric receptive field: layer k sees [t - l_k, t + r_k]."""

    def __init__(self, input_dim: int, pads: list[tuple[int, int]], num_classes: int = 6, hidden: int = 16) -> None:
        super().__init__()
        dims = [input_dim] + [hidden] * (len(pads) - 1) + [num_classes]
        self.pads = pads
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], kernel_size=l + r + 1)
                                   for i, (l, r) in enumerate(pads))

    def receptive_field(self) -> tuple[int, int]:
        return sum(l for l, _ in self.pads), sum(r for _, r in self.pads)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (1, T, F) -> (1, T, C); zero padding at the sequence edges, like a padded conv."""
        h = x.transpose(1, 2)
        for i, ((l, r), conv) in enumerate(zip(self.pads, self.convs)):
            h = conv(nn.functional.pad(h, (l, r)))
            if i < len(self.convs) - 1:
                h = torch.tanh(h)
        return h.transpose(1, 2)


def make_feature_fn(cfg: FeatureConfig):
    """Features with a fixed "global CMVN" (constant statistics, as the caller's real feature_fn would)."""
    def feature_fn(waveform: torch.Tensor) -> torch.Tensor:
        feats = compute_features(waveform, SR, cfg)
        return (feats - 5.0) / 4.0
    return feature_fn


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """2 minutes at 16 kHz: noise plus tones whose frequency changes every ~0.7 s, as 16-bit FLAC."""
    rng = np.random.default_rng(0)
    n = 120 * SR
    t = np.arange(n) / SR
    freqs = rng.uniform(150, 3000, size=n // 11000 + 1)[np.arange(n) // 11000]
    phase = 2 * np.pi * np.cumsum(freqs) / SR
    signal = 0.3 * np.sin(phase) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)) + 0.05 * rng.standard_normal(n)
    path = tmp_path_factory.mktemp("audio") / "long.flac"
    sf.write(path, signal.astype(np.float32), SR, subtype="PCM_16")
    samples, _ = sf.read(path, dtype="float32")          # the quantised samples every reader sees
    return path, samples


def whole_logits(samples: np.ndarray, feature_fn, model: nn.Module) -> torch.Tensor:
    feats = feature_fn(torch.from_numpy(samples))
    with torch.no_grad():
        return model(feats[None], torch.tensor([feats.shape[0]]))[0]


def chunked(audio, feature_fn, model, rf, chunk_frames, context=0) -> tuple[list[int], torch.Tensor]:
    firsts, pieces = [], []
    with torch.no_grad():
        for first, logits in iter_chunked_logits(audio, feature_fn=feature_fn, frame_fn=model, receptive_field=rf,
                                                 chunk_frames=chunk_frames, feature_context_frames=context):
            firsts.append(first)
            pieces.append(logits)
    return firsts, torch.cat(pieces) if pieces else torch.zeros(0, 0)


def assert_contiguous(firsts: list[int], chunk_frames: int, total: int) -> None:
    assert firsts == list(range(0, total, chunk_frames))


FBANK = FeatureConfig(kind="fbank", num_mel_bins=23)
MFCC_DELTAS = FeatureConfig(kind="mfcc", num_mel_bins=23, deltas=True)


@pytest.mark.parametrize("cfg", [FBANK, MFCC_DELTAS], ids=["fbank", "mfcc+deltas"])
@pytest.mark.parametrize("chunk_frames", [997, 4096])
def test_chunked_equals_whole_from_file(recording, cfg, chunk_frames):
    path, samples = recording
    torch.manual_seed(0)
    feature_fn = make_feature_fn(cfg)
    dim = compute_features(torch.zeros(400), SR, cfg).shape[1]
    model = ConvStack(dim, [(3, 1), (0, 2), (2, 2)]).eval()
    rf = model.receptive_field()
    expected = whole_logits(samples, feature_fn, model)
    total = num_frames(samples.shape[0])
    assert expected.shape[0] == total == 11998

    context = feature_context_frames(cfg)
    firsts, got = chunked(path, feature_fn, model, rf, chunk_frames, context)
    assert_contiguous(firsts, chunk_frames, total)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    labels = np.concatenate([ids for _, ids in iter_chunked_predictions(
        path, feature_fn=feature_fn, frame_fn=model, receptive_field=rf, chunk_frames=chunk_frames,
        feature_context_frames=context)])
    np.testing.assert_array_equal(labels, expected.argmax(-1).numpy())
    assert len(np.unique(labels)) > 2          # the comparison is not trivially constant


def test_too_small_context_is_detected(recording):
    """The equality above is meaningful: one frame less of context changes frames at chunk edges."""
    _, samples = recording
    samples = samples[: 10 * SR]
    torch.manual_seed(0)
    feature_fn = make_feature_fn(MFCC_DELTAS)
    model = ConvStack(39, [(3, 1), (0, 2), (2, 2)]).eval()
    expected = whole_logits(samples, feature_fn, model)
    left, right = model.receptive_field()
    for rf, context in [((left - 1, right), 4), ((left, right - 1), 4), ((left, right), 3)]:
        _, got = chunked([torch.from_numpy(samples)], feature_fn, model, rf, 50, context)
        assert (got - expected).abs().max() > 1e-3, (rf, context)


@pytest.mark.parametrize("chunk_frames", [1, 3, 8])
def test_chunks_smaller_than_receptive_field(recording, chunk_frames):
    _, samples = recording
    samples = samples[: 2 * SR + 77]
    torch.manual_seed(2)
    feature_fn = make_feature_fn(MFCC_DELTAS)
    model = ConvStack(39, [(3, 1), (0, 2), (2, 2)]).eval()
    expected = whole_logits(samples, feature_fn, model)
    firsts, got = chunked([torch.from_numpy(samples)], feature_fn, model, model.receptive_field(), chunk_frames, 4)
    assert_contiguous(firsts, chunk_frames, expected.shape[0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_block_iterables_with_odd_sizes_and_overlapping_pairs(recording):
    _, samples = recording
    samples = samples[: 20 * SR + 1234]
    torch.manual_seed(1)
    feature_fn = make_feature_fn(FBANK)
    model = ConvStack(23, [(4, 4), (1, 3)]).eval()
    expected = whole_logits(samples, feature_fn, model)
    sizes = np.random.default_rng(3).integers(1, 9000, size=200).cumsum()
    odd_blocks = np.split(samples, sizes[sizes < samples.shape[0]])
    _, got = chunked(iter(odd_blocks), feature_fn, model, model.receptive_field(), 333)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # (start, block) pairs with overlap, as iter_audio_blocks(..., overlap_samples>0) yields
    pairs = [(s, torch.from_numpy(samples[s:s + 5000])) for s in range(0, samples.shape[0], 4000)]
    _, got = chunked(pairs, feature_fn, model, model.receptive_field(), 333)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_samples, expected_frames", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (4000, 23)])
def test_short_audio_and_batch_of_one(n_samples, expected_frames):
    model = ConvStack(23, [(2, 2)]).eval()
    calls = []

    def frame_fn(x, lengths):
        assert x.shape[0] == 1 and lengths.tolist() == [x.shape[1]]
        calls.append(x.shape[1])
        return model(x, lengths)

    waveform = torch.randn(n_samples) * 0.1
    out = list(iter_chunked_predictions([waveform], feature_fn=make_feature_fn(FBANK), frame_fn=frame_fn,
                                        receptive_field=(2, 2), chunk_frames=1000))
    assert sum(len(ids) for _, ids in out) == expected_frames
    assert len(out) == (1 if expected_frames else 0) == len(calls)


def test_memory_bounded_reads_and_feature_windows(recording):
    """Only O(chunk + context) samples are read ahead and featurised, however long the recording."""
    _, samples = recording
    chunk, (left, right), context, block = 400, (7, 5), 4, 3000
    consumed = [0]

    def blocks():
        for s in range(0, samples.shape[0], block):
            consumed[0] = min(samples.shape[0], s + block)
            yield samples[s:s + block]

    window_sizes = []
    feature_fn = make_feature_fn(MFCC_DELTAS)

    def recording_feature_fn(waveform):
        window_sizes.append(waveform.shape[0])
        return feature_fn(waveform)

    model = ConvStack(39, [(4, 2), (3, 3)]).eval()
    with torch.no_grad():
        for first, logits in iter_chunked_logits(blocks(), feature_fn=recording_feature_fn, frame_fn=model,
                                                 receptive_field=(left, right), chunk_frames=chunk,
                                                 feature_context_frames=context):
            needed = frame_span_samples(0, first + chunk + right + context)[1]
            assert consumed[0] <= needed + block          # no read-ahead beyond one block
    max_window = frame_span_samples(0, chunk + left + right + 2 * context)[1]
    assert max(window_sizes) <= max_window
    assert len(window_sizes) == -(-num_frames(samples.shape[0]) // chunk)


def test_self_attention_encoder_when_available(recording):
    if importlib.util.find_spec("speechattn.models.transformer") is None:
        pytest.skip("speechattn.models.transformer not written yet (ConvStack tests cover the logic)")
    from speechattn.models.transformer import SelfAttentionEncoder

    _, samples = recording
    samples = samples[: 30 * SR]
    torch.manual_seed(0)
    encoder = SelfAttentionEncoder(input_dim=23, d_model=32, num_layers=2, num_heads=2, ffn_dim=64, left=6, right=3,
                                   pos_conv_kernel=5).eval()
    head = nn.Linear(encoder.output_dim, 7)

    def model(x, lengths):
        return head(encoder(x, lengths))

    feature_fn = make_feature_fn(FBANK)
    expected = whole_logits(samples, feature_fn, model)
    rf = encoder.receptive_field()
    assert rf == (2 * 6 + 2, 2 * 3 + 2)
    firsts, got = chunked([torch.from_numpy(samples)], feature_fn, model, rf, 250)
    assert_contiguous(firsts, 250, expected.shape[0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got.argmax(-1).numpy(), expected.argmax(-1).numpy())
    # Far context reaches the output only weakly through the attention stack (one frame less of context
    # moves the logits by ~1e-5 here), so check that the exact field is both sufficient and necessary
    # against a tighter bound than the 1e-5 tolerance (the chunked logits are in fact bit-identical here).
    assert (got - expected).abs().max() <= 2e-6
    for too_small in [(rf[0] - 1, rf[1]), (rf[0], rf[1] - 1)]:
        _, bad = chunked([torch.from_numpy(samples)], feature_fn, model, too_small, 250)
        assert (bad - expected).abs().max() > 5e-6, (
            f"receptive field {too_small} (one frame less than encoder.receptive_field() = {rf}) gives the "
            f"same logits: the encoder does not use the context it reports (attention band off by one?)")


def test_corrupt_flac_block_raises_with_offset_and_earlier_labels_stay_valid(recording, tmp_path):
    path, samples = recording
    corrupt = tmp_path / "corrupt.flac"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = b"\xff" * 4096
    corrupt.write_bytes(bytes(data))
    with pytest.raises(Exception):                          # soundfile detects it (FLAC has CRCs)
        sf.read(corrupt)

    torch.manual_seed(0)
    feature_fn = make_feature_fn(FBANK)
    model = ConvStack(23, [(3, 3)]).eval()
    expected = whole_logits(samples, feature_fn, model).argmax(-1).numpy()
    got: list[tuple[int, np.ndarray]] = []
    with pytest.raises(AudioError) as excinfo, torch.no_grad():
        for first, ids in iter_chunked_predictions(corrupt, feature_fn=feature_fn, frame_fn=model,
                                                   receptive_field=(3, 3), chunk_frames=500):
            got.append((first, ids))
    offset = float(re.search(r"at (\d+\.\d+) s", str(excinfo.value)).group(1))
    assert str(corrupt) in str(excinfo.value)
    assert 20.0 < offset < 100.0                             # the middle of a 2-minute file
    assert got, "chunks before the corrupt block should have been yielded"
    for first, ids in got:
        np.testing.assert_array_equal(ids, expected[first:first + len(ids)])
    assert got[-1][0] + len(got[-1][1]) <= offset * 100      # nothing past the corruption was labelled


def test_iter_audio_blocks_contract_still_matches(recording):
    """longform relies on (start_sample, block) pairs from iter_audio_blocks."""
    path, samples = recording
    start, block = next(iter_audio_blocks(path, 8000, 0, SR))
    assert start == 0 and block.shape == (8000,)
    np.testing.assert_array_equal(block.numpy(), samples[:8000])


def test_unbounded_receptive_field_refused():
    with pytest.raises(ValueError, match="unbounded"):
        list(iter_chunked_predictions([torch.zeros(1000)], feature_fn=make_feature_fn(FBANK),
                                      frame_fn=lambda x, n: x, receptive_field=None))


def test_runs_to_ctm():
    labels = ["SIL"] * 3 + ["AH"] + ["T"] * 2 + ["SIL"]
    lines = runs_to_ctm("utt1", labels)
    assert lines == ["utt1 1 0.00 0.03 SIL", "utt1 1 0.03 0.01 AH", "utt1 1 0.04 0.02 T",
                     "utt1 1 0.06 0.01 SIL"]
    # the runs tile [0, n * shift) without gaps and expand back to the labels
    expanded = [lab for line in lines for lab in [line.split()[4]] * round(float(line.split()[3]) / 0.01)]
    assert expanded == labels
    assert runs_to_ctm("u", []) == []
    assert runs_to_ctm("u", ["a"] * 2, time_offset=0.0075) == ["u 1 0.0075 0.0200 a"]
    assert runs_to_ctm("u", ["a", "b"], frame_shift=0.025) == ["u 1 0.000 0.025 a", "u 1 0.025 0.025 b"]
