"""speechattn.data.ondemand: features and labels read from arks per item, with workers and exact resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import kaldiio
from speechattn.data.dataset import FrameLabelDataset, collate, load_features
from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.ondemand import LABEL_ARK_NAME, ArkIndex, OnDemandFeatureDataset, write_label_ark
from speechattn.data.sampler import LengthBucketBatchSampler

PHONES = ["SIL", "AA", "B", "IY"]


def make_data_dir(root, num_utts=40, dim=5, jobs=3, seed=0):
    """A data dir as the feature stage writes it: several arks, a merged sorted feats.scp, utt2num_frames,
    frame_labels."""
    rng = np.random.default_rng(seed)
    data = root / "data"
    (data / "feats").mkdir(parents=True)
    utts = [f"spk{k % 4}-utt{k:03d}" for k in range(num_utts)]
    lengths = {u: int(rng.integers(3, 60)) for u in utts}
    scp_lines = []
    for job in range(jobs):
        ark = data / "feats" / f"raw_fbank.{job + 1}.ark"
        with open(ark, "wb") as f:
            for utt in utts[job::jobs]:
                position = f.tell() + len(utt) + 1
                kaldiio.save_ark(f, {utt: rng.standard_normal((lengths[utt], dim)).astype(np.float32)})
                scp_lines.append(f"{utt} {ark}:{position}\n")
    (data / "feats.scp").write_text("".join(sorted(scp_lines)))
    (data / "utt2num_frames").write_text("".join(f"{u} {lengths[u]}\n" for u in sorted(utts)))
    (data / "frame_labels").write_text("".join(
        f"{u} {' '.join(rng.choice(PHONES, lengths[u]))}\n" for u in sorted(utts)))
    return data


def on_demand(data, **kwargs):
    return OnDemandFeatureDataset(ArkIndex.from_data_dir(data),
                                  frame_labels=ArkIndex.from_scp(write_label_ark(data, PHONES)), **kwargs)


def in_memory(data):
    labels = {}
    for line in (data / "frame_labels").read_text().splitlines():
        utt, *phones = line.split()
        labels[utt] = [PHONES.index(p) for p in phones]
    return FrameLabelDataset(load_features(data), labels)


def test_items_equal_the_in_memory_dataset(tmp_path):
    data = make_data_dir(tmp_path)
    streamed, loaded = on_demand(data), in_memory(data)
    assert streamed.utts == loaded.utts and streamed.lengths().tolist() == loaded.lengths()
    for i in range(len(loaded)):
        a, b = streamed[i], loaded[i]
        assert a.utt == b.utt and torch.equal(a.feats, b.feats) and torch.equal(a.target, b.target)
        assert a.feats.dtype == torch.float32 and a.target.dtype == torch.long


def test_normaliser_and_utterance_targets(tmp_path):
    data = make_data_dir(tmp_path, num_utts=6)
    index = ArkIndex.from_data_dir(data)
    dataset = OnDemandFeatureDataset(index, targets=np.arange(6) % 2, normalise=lambda utt, m: m - m.mean(0))
    example = dataset[3]
    assert example.target == 1 and torch.allclose(example.feats.mean(0), torch.zeros(5), atol=1e-5)
    with pytest.raises(ValueError, match="frame_labels or targets"):
        OnDemandFeatureDataset(index, frame_labels=index, targets=[0] * 6)


def epoch_batches(dataset, sampler, workers):
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    return [(batch.utts, batch.feats, batch.targets) for batch in loader]


def same_batches(a, b):
    return len(a) == len(b) and all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                                    for x, y in zip(a, b))


def test_workers_give_the_same_batches(tmp_path):
    data = make_data_dir(tmp_path)
    dataset = on_demand(data)
    reference = epoch_batches(dataset, LengthBucketBatchSampler(dataset.lengths(), 150, seed=4), 0)
    with_workers = epoch_batches(dataset, LengthBucketBatchSampler(dataset.lengths(), 150, seed=4), 2)
    assert same_batches(reference, with_workers)
    assert sum(len(b[0]) for b in reference) == len(dataset)


def test_mid_epoch_resume_is_exact_with_workers(tmp_path):
    """Interrupt after k batches (the loader prefetches ahead), resume in a new process state: the rest of
    the epoch is exactly the uninterrupted run's rest."""
    data = make_data_dir(tmp_path, num_utts=60)
    dataset = on_demand(data)
    sampler = LengthBucketBatchSampler(dataset.lengths(), 150, seed=9)
    sampler.set_epoch(2)
    full = epoch_batches(dataset, sampler, 2)
    k = len(full) // 3

    sampler = LengthBucketBatchSampler(dataset.lengths(), 150, seed=9)
    sampler.set_epoch(2)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    consumed = 0
    for _ in loader:
        consumed += 1
        if consumed == k:
            state = sampler.state_dict(batches_done=consumed)  # the sampler itself has run ahead
            break
    del loader

    resumed_dataset = on_demand(data)  # a new process would rebuild everything
    resumed_sampler = LengthBucketBatchSampler(resumed_dataset.lengths(), 150, seed=0)
    resumed_sampler.load_state_dict(state)
    resumed_sampler.set_epoch(2)
    rest = epoch_batches(resumed_dataset, resumed_sampler, 2)
    assert same_batches(full[k:], rest)


def test_index_is_compact(tmp_path):
    data = make_data_dir(tmp_path, num_utts=40)
    index = ArkIndex.from_data_dir(data)
    assert len(index.files) == 3 and len(index) == 40
    per_utterance = sum(a.nbytes for a in (index.file_ids, index.offsets, index.lengths, index.lines)) / len(index)
    assert per_utterance == 20


def test_subset_of_utterances(tmp_path):
    data = make_data_dir(tmp_path, num_utts=10)
    index = ArkIndex.from_data_dir(data, utts=["spk1-utt001", "spk2-utt006"])
    assert index.utts == ["spk1-utt001", "spk2-utt006"]
    with pytest.raises(KaldiDataError, match="have no entry, e.g. 'nope'"):
        ArkIndex.from_data_dir(data, utts=["spk1-utt001", "nope"])


def test_bad_scp_entries_name_file_and_line(tmp_path):
    data = make_data_dir(tmp_path, num_utts=4)
    lines = (data / "feats.scp").read_text().splitlines()
    (data / "feats.scp").write_text(lines[0] + "\n" + lines[1].split()[0] + " gunzip -c x.ark.gz |\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: on-demand reading needs 'ARK:OFFSET'"):
        ArkIndex.from_data_dir(data)
    (data / "feats.scp").write_text(lines[1] + "\n" + lines[0] + "\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp:2: key .* not sorted"):
        ArkIndex.from_data_dir(data)


def test_utterance_missing_from_utt2num_frames(tmp_path):
    data = make_data_dir(tmp_path, num_utts=5)
    lines = (data / "utt2num_frames").read_text().splitlines()
    (data / "utt2num_frames").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp:3: utterance '.*' is not in .*utt2num_frames"):
        ArkIndex.from_data_dir(data)


def test_stale_scp_and_wrong_lengths_are_errors_when_read(tmp_path):
    data = make_data_dir(tmp_path, num_utts=6)
    lines = (data / "feats.scp").read_text().splitlines()
    utt0, value0 = lines[0].split()
    utt1, value1 = lines[1].split()
    (data / "feats.scp").write_text(f"{utt0} {value1}\n{utt1} {value0}\n" + "\n".join(lines[2:]) + "\n")
    dataset = OnDemandFeatureDataset(ArkIndex.from_data_dir(data))
    with pytest.raises(KaldiDataError, match=rf"feats.scp:1: the ark holds '{utt1}' at this offset, not '{utt0}'"):
        dataset[0]
    frames = (data / "utt2num_frames").read_text().splitlines()
    frames[2] = frames[2].split()[0] + " 999"
    (data / "utt2num_frames").write_text("\n".join(frames) + "\n")
    dataset = OnDemandFeatureDataset(ArkIndex.from_data_dir(data))
    with pytest.raises(KaldiDataError, match=r"feats.scp:3: .* but utt2num_frames says 999 frames"):
        dataset[2]


def test_truncated_ark(tmp_path):
    data = make_data_dir(tmp_path, num_utts=6, jobs=1)
    ark = data / "feats" / "raw_fbank.1.ark"
    ark.write_bytes(ark.read_bytes()[:-50])
    dataset = OnDemandFeatureDataset(ArkIndex.from_data_dir(data))
    last = max(range(6), key=lambda i: dataset.features.offsets[i])
    with pytest.raises(KaldiDataError, match=r"feats.scp:\d+: cannot read"):
        dataset[last]


def test_label_ark_is_rewritten_only_when_stale(tmp_path):
    data = make_data_dir(tmp_path, num_utts=5)
    scp = write_label_ark(data, PHONES)
    ark = data / f"{LABEL_ARK_NAME}.ark"
    first = ark.stat().st_mtime_ns
    assert write_label_ark(data, PHONES) == scp and ark.stat().st_mtime_ns == first  # up to date: kept
    write_label_ark(data, PHONES[::-1])  # other phone table: ids change, rewritten
    ids = dict(kaldiio.load_scp(str(scp)))
    utt, *phones = (data / "frame_labels").read_text().splitlines()[0].split()
    assert ids[utt].tolist() == [PHONES[::-1].index(p) for p in phones]


def test_label_ark_unknown_phone(tmp_path):
    data = make_data_dir(tmp_path, num_utts=3)
    lines = (data / "frame_labels").read_text().splitlines()
    lines[1] = lines[1] + " ZZ"
    (data / "frame_labels").write_text("\n".join(lines) + "\n")
    with pytest.raises(KaldiDataError, match=r"frame_labels:2: phone 'ZZ'"):
        write_label_ark(data, PHONES)
    assert not (data / f"{LABEL_ARK_NAME}.json").exists()


def test_label_count_must_match_features(tmp_path):
    data = make_data_dir(tmp_path, num_utts=3)
    lines = (data / "frame_labels").read_text().splitlines()
    lines[0] = lines[0] + " SIL"
    (data / "frame_labels").write_text("\n".join(lines) + "\n")
    dataset = on_demand(data)
    with pytest.raises(KaldiDataError, match=r"frame_label_ids.scp:1: .* frame labels but .* feature frames"):
        dataset[0]


def _train_phone(root, exp, *extra):
    """One short phone training on the synthetic corpus of tests/phone_data.py; returns its history."""
    import json

    from hydra import compose, initialize_config_dir

    from phone_data import phone_overrides
    from speechattn.bin._hydra import CONF_DIR
    from speechattn.bin.train import run

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*phone_overrides(root, exp, "mlp_context"),
                                                      "trainer.max_epochs=2", "trainer.seed=3", *extra])
    run(cfg, exp)
    return json.loads((exp / "history.json").read_text())


def test_phone_training_on_demand_gives_the_in_memory_losses(tmp_path):
    from phone_data import make_phone_corpus

    root = make_phone_corpus(tmp_path / "corpus", train_utts=12, dev_utts=4)
    for name in ("train", "dev"):
        feats = dict(kaldiio.load_scp(str(root / name / "feats.scp")))
        (root / name / "utt2num_frames").write_text("".join(f"{u} {len(m)}\n" for u, m in sorted(feats.items())))
    in_memory = _train_phone(root, tmp_path / "mem")
    on_demand = _train_phone(root, tmp_path / "ondemand", "data.on_demand=true", "trainer.num_workers=1")
    assert (root / "train" / f"{LABEL_ARK_NAME}.scp").is_file()  # labels were read from their ark
    keys = ("train_loss", "train_acc", "valid_loss", "valid_acc")
    assert [[row[k] for k in keys] for row in on_demand] == [[row[k] for k in keys] for row in in_memory]
    assert in_memory[0]["train_loss"] != in_memory[1]["train_loss"]  # it did train: the comparison means something
