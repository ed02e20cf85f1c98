"""Speaker task with ``data.on_demand=true``: crops read from the feature arks per item (only an index in
memory) give the in-memory crops, batches, losses and weights; DataLoader workers; exact mid-epoch resume;
dev-EER selection over held-back speakers read on demand; augment=speaker refused."""
from __future__ import annotations

import logging

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from speechattn.bin.compute_cmvn import compute_cmvn_stats
from speechattn.data.crops import SpeakerBatchSampler, SpeakerCropDataset
from speechattn.data.dataset import collate, load_features
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.ondemand import ArkIndex, FeatureUnion, OnDemandFeatures, feature_subset, frame_counts
from speechattn.data.speakers import write_speakers
from speechattn.training.speaker_validation import IdentificationTop1, VerificationEER
from speechattn.utils.checkpoint import load_checkpoint
from test_ondemand import make_data_dir
from test_sid_infer import _features, _make_dir, _overrides, _train

SIX = [f"spk{c}" for c in "ABCDEF"]  # enough speakers to hold 2 back for dev EER


def _shift(utt: str, m: np.ndarray) -> np.ndarray:
    return m - 0.5  # a normaliser: both paths must apply it


# ------------------------------------------------------------------------------------ the mapping

def test_on_demand_features_equal_load_features_and_read_only_when_looked_up(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, num_utts=12)
    loaded = load_features(data, _shift)
    feats = OnDemandFeatures(ArkIndex.from_data_dir(data), _shift)
    assert list(feats) == list(loaded) and len(feats) == 12
    assert frame_counts(feats).tolist() == [len(m) for m in loaded.values()] == frame_counts(loaded).tolist()
    for utt, mat in loaded.items():
        assert np.array_equal(feats[utt], mat) and feats[utt].dtype == mat.dtype
    utts = list(loaded)
    part = feature_subset(feats, [utts[7], utts[2]])
    assert isinstance(part, OnDemandFeatures) and list(part) == [utts[2], utts[7]]  # scp order
    assert np.array_equal(part[utts[7]], loaded[utts[7]])
    with pytest.raises(KeyError):
        feats["nope"]
    # Keys, membership, lengths and subsets never touch the arks: they work with the arks gone.
    for ark in (data / "feats").glob("*.ark"):
        ark.write_bytes(b"")
    assert utts[3] in feats and "nope" not in feats and feats.num_frames(utts[3]) == len(loaded[utts[3]])
    assert list(feature_subset(feats, utts[:4])) == utts[:4]
    with pytest.raises(KaldiDataError, match=r"feats.scp:4: cannot read"):
        feats[utts[3]]


class _RowShift:
    rowwise = True  # as CmvnApplier in global/speaker mode: frames normalised one by one

    def __call__(self, utt: str, m: np.ndarray) -> np.ndarray:
        return m - 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_crop_reads_only_the_crop_rows(tmp_path: Path, dtype: type) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    mats = {f"u{k}": rng.standard_normal((40 + k, 3)).astype(dtype) for k in range(3)}
    mats["u1"][:10] = np.nan  # outside the crops read below: a partial read never sees them
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for utt, m in mats.items():
            w(utt, m)
    (data / "utt2num_frames").write_text("".join(f"{u} {len(m)}\n" for u, m in mats.items()))
    feats = OnDemandFeatures(ArkIndex.from_data_dir(data), _RowShift())
    for utt, start, length in (("u0", 0, 40), ("u0", 5, 7), ("u1", 12, 29), ("u2", 30, 50)):
        want = mats[utt][start:start + length].astype(np.float32) - 0.5
        got = feats.read_crop(utt, start, length)
        assert got.dtype == np.float32 and np.array_equal(got, want), (utt, start, length)
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: features of 'u1' contain NaN"):
        feats["u1"]  # the whole matrix
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: features of 'u1' contain NaN"):
        feats.read_crop("u1", 5, 10)  # the crop reaches the bad rows
    # A normaliser that needs the whole utterance (per-utterance CMVN) makes it read the whole matrix.
    whole = OnDemandFeatures(ArkIndex.from_data_dir(data), _shift)
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: features of 'u1' contain NaN"):
        whole.read_crop("u1", 12, 29)
    # utt2num_frames disagreeing with the ark's header is an error, as for a whole read.
    (data / "utt2num_frames").write_text("u0 40\nu1 99\nu2 42\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: 'u1' has features of shape \(41, 3\) but "
                                             r"utt2num_frames says 99"):
        OnDemandFeatures(ArkIndex.from_data_dir(data), _RowShift()).read_crop("u1", 12, 29)


def test_feature_union_of_two_dirs(tmp_path: Path) -> None:
    a = make_data_dir(tmp_path / "a", num_utts=4, seed=1)
    b = make_data_dir(tmp_path / "b", num_utts=4, seed=2)  # other utterance IDs below
    for name in ("feats.scp", "utt2num_frames"):
        (b / name).write_text((b / name).read_text().replace("spk", "zpk"))
    for ark in (b / "feats").glob("*.ark"):
        ark.write_bytes(ark.read_bytes().replace(b"spk", b"zpk"))
    left = OnDemandFeatures(ArkIndex.from_data_dir(a), _shift)
    right = OnDemandFeatures(ArkIndex.from_data_dir(b))  # its own normaliser (none)
    union = FeatureUnion([left, right])
    assert len(union) == 8 and list(union) == list(left) + list(right)
    utt_b = list(right)[1]
    assert np.array_equal(union[utt_b], load_features(b)[utt_b]) and union.num_frames(utt_b) == len(union[utt_b])
    sub = feature_subset(union, [utt_b, list(left)[0]])
    assert sorted(sub) == sorted([utt_b, list(left)[0]]) and np.array_equal(sub[list(left)[0]],
                                                                            load_features(a, _shift)[list(left)[0]])


@pytest.mark.parametrize("max_utts", [None, 7])
def test_sid_split_on_demand_has_the_in_memory_utterances_and_targets(tmp_path: Path, max_utts: int | None) -> None:
    from omegaconf import OmegaConf

    from speechattn.tasks.sid import _load_split

    data = make_data_dir(tmp_path, num_utts=12)
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in load_features(data)))
    speakers = ["spk3", "spk1", "spk0", "spk2"]
    cfgs = [OmegaConf.create({"data": {"on_demand": flag, "max_utts": max_utts}}) for flag in (False, True)]
    (memory, memory_targets), (streamed, streamed_targets) = (_load_split(data, c, speakers, _shift) for c in cfgs)
    assert isinstance(streamed, OnDemandFeatures) and list(streamed) == list(memory)
    assert len(memory) == (max_utts or 12) and streamed_targets == memory_targets
    assert all(np.array_equal(streamed[u], m) for u, m in memory.items())


# ------------------------------------------------------------------------------ crops and workers

def _crop_sets(data: Path) -> tuple[SpeakerCropDataset, SpeakerCropDataset]:
    loaded = load_features(data, _shift)
    targets = {u: int(u[3]) for u in loaded}  # spk<k>-...
    on_demand = OnDemandFeatures(ArkIndex.from_data_dir(data), _shift)
    return (SpeakerCropDataset(loaded, targets, crop=(8, 20), seed=5),
            SpeakerCropDataset(on_demand, targets, crop=(8, 20), seed=5))


def _epoch(dataset: SpeakerCropDataset, sampler: SpeakerBatchSampler, workers: int) -> list:
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    return [(b.utts, b.feats, b.lengths, b.targets) for b in loader]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and all(torch.equal(p, q) for p, q in zip(x[1:], y[1:]))
                                    for x, y in zip(a, b))


def test_on_demand_crops_equal_in_memory_crops_with_workers(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, num_utts=40)
    memory, streamed = _crop_sets(data)
    assert memory.lengths() == streamed.lengths() and memory.num_shorter_than(20) == streamed.num_shorter_than(20)
    for epoch in (0, 3):
        runs = []
        for dataset, workers in ((memory, 0), (streamed, 2)):
            sampler = SpeakerBatchSampler(dataset, 60, seed=5)
            sampler.set_epoch(epoch)
            runs.append(_epoch(dataset, sampler, workers))
        assert _same(*runs) and sum(len(b[0]) for b in runs[0]) == 40
    assert runs[0][0][1].shape[2] == 5 and max(int(b[2].max()) for b in runs[0]) <= 20 < max(memory.num_frames)


def test_on_demand_crops_resume_mid_epoch_with_workers(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, num_utts=60)
    memory, _ = _crop_sets(data)
    sampler = SpeakerBatchSampler(memory, 60, seed=7)
    sampler.set_epoch(2)
    full = _epoch(memory, sampler, 0)
    k = len(full) // 3

    _, streamed = _crop_sets(data)
    sampler = SpeakerBatchSampler(streamed, 60, seed=7)
    sampler.set_epoch(2)
    for done, _batch in enumerate(DataLoader(streamed, batch_sampler=sampler, collate_fn=collate, num_workers=2),
                                  start=1):
        if done == k:
            state = sampler.state_dict(batches_done=done)  # the loader has prefetched ahead
            break
    _, resumed = _crop_sets(data)  # a new process: the dataset starts at epoch 0
    resumed_sampler = SpeakerBatchSampler(resumed, 60, seed=0)
    resumed_sampler.load_state_dict(state)
    resumed_sampler.set_epoch(2)
    assert _same(full[k:], _epoch(resumed, resumed_sampler, 2))


def test_dev_metrics_take_on_demand_features_without_loading_them(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, num_utts=8)
    loaded = load_features(data, _shift)
    streamed = OnDemandFeatures(ArkIndex.from_data_dir(data), _shift)
    utts = list(loaded)
    trials = [(int(a[3] == b[3]), a, b) for a in utts[:6] for b in utts[:6] if a < b]
    targets = {u: int(u[3]) for u in utts}

    torch.manual_seed(0)
    model = _MeanModel(5, 4)
    eer = VerificationEER(streamed, trials, max_frames_per_batch=100)
    assert isinstance(eer.feats, OnDemandFeatures) and len(eer.feats) == 6  # the used ones, still on disk
    assert eer(model) == VerificationEER(loaded, trials, max_frames_per_batch=100)(model)
    top1 = IdentificationTop1(streamed, targets, max_frames_per_batch=100)
    assert isinstance(top1.feats, OnDemandFeatures)
    assert top1(model) == IdentificationTop1(loaded, targets, max_frames_per_batch=100)(model)


class _MeanModel(torch.nn.Module):
    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.proj, self.head = torch.nn.Linear(dim, 3), torch.nn.Linear(3, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).float()[..., None]
        return self.proj((x * mask).sum(1) / lengths[:, None].float())

    def logits(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(e)


# --------------------------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import test_sid_infer

    root = tmp_path_factory.mktemp("sid_ondemand")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_sid_infer, "SPEAKERS", SIX)
        for name, per_speaker, seed in (("train", 4, 1), ("dev", 1, 2)):
            d = _make_dir(root, name, per_speaker, seed, speakers=SIX)
            _features(d)
            feats = dict(kaldiio.load_scp(str(d / "feats.scp")))
            (d / "utt2num_frames").write_text("".join(f"{u} {len(m)}\n" for u, m in sorted(feats.items())))
    compute_cmvn_stats(root / "train", "global")
    write_speakers(root / "train" / "speakers.txt", SIX)
    return root


COMMON = ["trainer.max_epochs=2", "trainer.save_every_steps=1", "trainer.select_by=dev_eer",
          "trainer.dev_speakers=0.34", "trainer.max_frames_per_batch=240"]
ON_DEMAND = ["data.on_demand=true", "trainer.num_workers=2"]


def _run(corpus: Path, exp: Path, *extra: str) -> None:
    _train([o.replace(f"{corpus}/test", f"{corpus}/dev") for o in _overrides(corpus, exp)] + COMMON + list(extra))


def test_on_demand_training_gives_the_in_memory_run_and_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    _run(corpus, tmp_path / "memory")
    memory = load_checkpoint(tmp_path / "memory" / "checkpoints" / "last.pt")
    _run(corpus, tmp_path / "ondemand", *ON_DEMAND)
    streamed = load_checkpoint(tmp_path / "ondemand" / "checkpoints" / "last.pt")
    keys = ("train_loss", "train_acc", "valid_loss", "valid_acc", "dev_eer", "dev_min_dcf")
    rows = [[row[k] for k in keys] for row in memory["history"]]
    assert [[row[k] for k in keys] for row in streamed["history"]] == rows
    assert rows[0][0] != rows[1][0]  # it trained: the comparison means something
    assert streamed["step"] == memory["step"] and streamed["epoch_hook"] == memory["epoch_hook"]
    for key in memory["model"]:
        assert torch.equal(memory["model"][key], streamed["model"][key]), key
    assert memory["model"]["head.weight"].shape[0] == 6  # 2 of the 6 speakers held back, still in the list

    # Interrupted in the middle of epoch 2, resumed (on demand, 2 workers): the uninterrupted run's weights.
    steps = load_checkpoint(tmp_path / "memory" / "checkpoints" / "epoch-1.pt")["step"]
    assert steps >= 3
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(corpus, resumed, *ON_DEMAND, f"trainer.stop_after_steps={steps + 2}")
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["sampler"]["batches_done"] == 2
    _run(corpus, resumed, *ON_DEMAND)
    again = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert again["step"] == memory["step"] and again["epoch_hook"] == memory["epoch_hook"]
    for key in memory["model"]:
        torch.testing.assert_close(memory["model"][key], again["model"][key], rtol=0, atol=1e-6, msg=key)
    # data.on_demand changes how the data is read, not the run: an in-memory rerun finds it finished.
    mtime = (resumed / "model.pt").stat().st_mtime_ns
    _run(corpus, resumed)
    assert (resumed / "model.pt").stat().st_mtime_ns == mtime


def test_on_demand_with_waveform_augmentation_is_refused(corpus: Path, tmp_path: Path) -> None:
    overrides = [o for o in _overrides(corpus, tmp_path / "x") if o != "augment=none"]
    with pytest.raises(ValueError, match="data.on_demand=true does not work with augment=speaker"):
        _train(overrides + ["augment=speaker", "data.on_demand=true", "make_rir_set=false"])


def test_on_demand_needs_utt2num_frames(corpus: Path, tmp_path: Path) -> None:
    bare = tmp_path / "train"
    bare.mkdir()
    for name in ("feats.scp", "feats.yaml", "cmvn_global.ark", "speakers.txt", "wav.scp", "utt2spk"):
        (bare / name).write_bytes((corpus / "train" / name).read_bytes())
    with pytest.raises(KaldiDataError, match=r"train/utt2num_frames:0: needed to batch by length"):
        _train(_overrides(corpus, tmp_path / "exp") + [f"data.train_dir={bare}", "data.on_demand=true"])


def test_cmvn_modes_that_allow_crop_reads() -> None:
    from speechattn.features.cmvn import CmvnApplier

    assert CmvnApplier("none").rowwise and not CmvnApplier("utterance").rowwise


def test_dev_trials_use_at_most_dev_utts_per_speaker(corpus: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="speechattn.tasks.sid"):
        _run(corpus, tmp_path / "limited", "trainer.max_epochs=1", "trainer.dev_utts_per_speaker=2")
    # 2 of the 6 speakers held back, 2 utterances each: 6 pairs, 2 of them same-speaker
    assert "2 training speakers held back (4 utterances, 6 trials, 2 target)" in caplog.text


def test_dev_top1_selection_reads_the_validation_pass_which_equals_a_separate_dev_pass(corpus: Path,
                                                                                     tmp_path: Path) -> None:
    # dev_top1 is taken from the loop's validation accuracy (no second pass over dev each epoch). It must be
    # what IdentificationTop1 (the separate pass it replaced) gives for the same weights, epoch by epoch.
    from hydra import compose, initialize_config_dir

    from speechattn.bin._hydra import CONF_DIR
    from speechattn.tasks import get_task

    exp = tmp_path / "top1"
    overrides = [o.replace(f"{corpus}/test", f"{corpus}/dev") for o in _overrides(corpus, exp)]
    overrides += ["trainer.max_epochs=3", "trainer.select_by=dev_top1", "trainer.keep_checkpoints=3", "optim.lr=6e-4",
                  "trainer.max_frames_per_batch=240"]
    _train(overrides)
    history = load_checkpoint(exp / "checkpoints" / "last.pt")["history"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train_sid", overrides=overrides)
    task = get_task("sid")
    labels = task.read_labels(task.labels_path(cfg))
    data = task.load_data(cfg, labels)
    separate = IdentificationTop1(data.selection.feats, data.selection.targets, data.selection.num_speakers)
    model = task.build_model(cfg, data.input_dim, len(labels))
    measured = []
    for row in history:
        model.load_state_dict(load_checkpoint(exp / "checkpoints" / f"epoch-{row['epoch']}.pt")["model"])
        measured.append(separate(model)["dev_top1"])
    assert [row["dev_top1"] for row in history] == pytest.approx(measured, abs=1e-9)
    assert len(set(measured)) > 1, measured  # epochs that differ: a value read from the wrong epoch would show
