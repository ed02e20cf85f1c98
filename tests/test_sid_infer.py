"""Speaker-ID training integration, inference and scoring on a tiny synthetic corpus (no ../shared needed).

Speakers are harmonic tones with their own pitch and spectral tilt, so a tiny model separates them in a
couple of epochs. The corpus is written as real Kaldi data dirs with the package's own stage functions
(features, CMVN), and training goes through ``speechattn.bin.train.run`` with ``speechattn/conf/train_sid.yaml``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechattn.bin._hydra import CONF_DIR
from speechattn.bin.compute_cmvn import compute_cmvn_stats
from speechattn.bin.train import run as train_run
from speechattn.data.kaldi_dir import KaldiDataError, read_table, utt2spk_to_spk2utt, write_table
from speechattn.data.sid_splits import make_trials
from speechattn.data.speakers import write_speakers
from speechattn.data.trials import write_trials
from speechattn.tasks.sid_predictor import SpeakerEmbedder
from speechattn.inference.driver import infer_dir
from speechattn.tasks.sid_scoring import score_sid
from speechattn.utils.checkpoint import load_checkpoint
from speechattn.data.crops import SpeakerBatchSampler, SpeakerCropDataset, crop_window

SR = 16000
SPEAKERS = ["spkA", "spkB", "spkC"]


def _speaker_audio(rng: np.random.Generator, k: int, seconds: float) -> np.ndarray:
    """Harmonics of a speaker-specific pitch, each speaker with its own spectral tilt, plus noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = (110.0 + 70.0 * k) * (1 + 0.03 * rng.standard_normal())
    tilt = 0.4 + 0.25 * k
    audio = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h ** tilt for h in range(1, 12))
    return (0.1 * audio / np.abs(audio).max() + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def _make_dir(root: Path, name: str, per_speaker: int, seed: int, speakers: list[str] = SPEAKERS) -> Path:
    rng = np.random.default_rng(seed)
    d = root / name
    wav_dir = root / "wav" / name
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk = {}, {}
    for spk in speakers:
        for i in range(per_speaker):
            utt = f"{spk}-{name}-{i:02d}"
            path = wav_dir / f"{utt}.flac"
            sf.write(path, _speaker_audio(rng, SPEAKERS.index(spk), float(rng.uniform(0.5, 1.1))), SR)
            wav_scp[utt], utt2spk[utt] = str(path), spk
    write_table(d / "wav.scp", wav_scp)
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    return d


def _features(data_dir: Path) -> None:
    from speechattn.bin.compute_features import run as compute_features_run
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("compute_features", [f"data_dir={data_dir}", "nj=1", "progress=false"])
    compute_features_run(cfg)


def _overrides(corpus: Path, exp_dir: Path) -> list[str]:
    return [f"exp_dir={exp_dir}", f"data.train_dir={corpus}/train", f"data.valid_dir={corpus}/dev",
            f"data.test_dir={corpus}/test", "model.d_model=32", "model.num_layers=1", "model.num_heads=2",
            "model.ffn_dim=64", "model.frame_stack=2", "model.left=8", "model.right=8", "sid.embed_dim=16", "sid.pooling_kwargs.hidden_dim=16",
            "trainer.crop_min_frames=30", "trainer.crop_max_frames=60", "trainer.max_frames_per_batch=360",
            "trainer.num_buckets=2", "trainer.threads=1", "optim.warmup_steps=2", "optim.lr=3e-3",
            "augment=none"]  # feature crops here; waveform augmentation: test_sid_augment_training.py


def _train(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train_sid", overrides=overrides)
    from speechattn.training.seed import seed_everything
    seed_everything(int(cfg.trainer.seed))
    train_run(cfg, Path(cfg.exp_dir))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sid")
    for name, per_speaker, seed in (("train", 8, 1), ("dev", 2, 2), ("test", 3, 3)):
        d = _make_dir(root, name, per_speaker, seed)
        _features(d)
    compute_cmvn_stats(root / "train", "global")
    write_speakers(root / "train" / "speakers.txt", SPEAKERS)
    return root


@pytest.fixture(scope="module")
def exp(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp_dir = tmp_path_factory.mktemp("exp") / "ident"
    _train(_overrides(corpus, exp_dir) + ["trainer.max_epochs=4"])
    return exp_dir


def test_crop_window_depends_only_on_seed_epoch_and_index() -> None:
    crops = {(e, i): crop_window(1000, 200, 300, seed=5, epoch=e, index=i) for e in range(3) for i in range(50)}
    for (e, i), (start, length) in crops.items():
        assert 200 <= length <= 300 and 0 <= start <= 1000 - length
        assert crop_window(1000, 200, 300, seed=5, epoch=e, index=i) == (start, length)
    assert len(set(crops.values())) > 100  # crops differ between utterances and epochs
    assert crop_window(1000, 200, 300, seed=6, epoch=0, index=0) != crop_window(1000, 200, 300, seed=5, epoch=0,
                                                                                  index=0)
    assert crop_window(120, 200, 300, seed=5, epoch=1, index=3) == (0, 120)  # shorter: used whole


def test_resumed_sampler_gives_the_same_crops() -> None:
    rng = np.random.default_rng(0)
    feats = {f"u{i:02d}": rng.standard_normal((int(rng.integers(50, 400)), 4)).astype(np.float32) for i in range(40)}
    targets = {u: i % 3 for i, u in enumerate(feats)}

    def run_epochs(resume_after: int | None) -> list[tuple[str, tuple[int, ...]]]:
        dataset = SpeakerCropDataset(feats, targets, crop=(100, 150), seed=9)
        sampler = SpeakerBatchSampler(dataset, 600, seed=9)
        seen = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            for k, batch in enumerate(sampler):
                seen.append([(dataset[i].utt, tuple(dataset[i].feats[:2, 0].tolist())) for i in batch])
                if resume_after is not None and epoch == 1 and k == resume_after:
                    state = sampler.state_dict()
                    dataset = SpeakerCropDataset(feats, targets, crop=(100, 150), seed=9)  # a fresh process
                    sampler = SpeakerBatchSampler(dataset, 600, seed=9)
                    sampler.load_state_dict(state)
                    sampler.set_epoch(1)
                    for batch2 in sampler:
                        seen.append([(dataset[i].utt, tuple(dataset[i].feats[:2, 0].tolist())) for i in batch2])
                    return seen
        return seen

    straight, resumed = run_epochs(None), run_epochs(2)
    assert straight == resumed
    assert all(len(b) >= 2 for b in straight)  # never a batch of one (BatchNorm)


def test_training_resume_is_exact(corpus: Path, tmp_path: Path) -> None:
    common = _overrides(corpus, tmp_path / "straight") + ["trainer.max_epochs=2", "trainer.save_every_steps=1"]
    _train(common)
    steps_per_epoch = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch-1.pt")["step"]
    assert steps_per_epoch >= 2
    interrupted = _overrides(corpus, tmp_path / "interrupted") + ["trainer.max_epochs=2", "trainer.save_every_steps=1"]
    with pytest.raises(KeyboardInterrupt):
        _train(interrupted + [f"trainer.stop_after_steps={steps_per_epoch + 1}"])
    _train(interrupted)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "interrupted" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 2 * steps_per_epoch
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=key)


def test_utterance_without_speaker_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    bad = tmp_path / "train"
    bad.mkdir()
    for name in ("feats.scp", "feats.yaml", "cmvn_global.ark", "speakers.txt", "wav.scp"):
        (bad / name).write_bytes((corpus / "train" / name).read_bytes())
    utt2spk = read_table(corpus / "train" / "utt2spk")
    dropped = sorted(utt2spk)[3]
    write_table(bad / "utt2spk", {u: s for u, s in utt2spk.items() if u != dropped})
    with pytest.raises(KaldiDataError, match=rf"feats.scp:4: utterance '{dropped}' has no speaker in .*utt2spk"):
        _train(_overrides(corpus, tmp_path / "exp") + [f"data.train_dir={bad}"])


def test_exp_dir_is_self_contained(exp: Path) -> None:
    for name in ("model.pt", "speakers.txt", "feats.yaml", "cmvn_global.ark", "history.json", ".done"):
        assert (exp / name).exists(), name
    config = load_checkpoint(exp / "model.pt")["config"]  # what SpeakerEmbedder rebuilds the model from
    assert config["task"] == "sid" and config["cmvn"]["norm_vars"] is False  # mean-only CMN
    assert config["model"]["name"] == "truncated_transformer" and config["sid"]["pooling"] == "attentive_stats"


def test_padded_batch_gives_the_same_embeddings(exp: Path, corpus: Path) -> None:
    embedder = SpeakerEmbedder.from_exp_dir(exp)
    feats = [torch.randn(57, 80), torch.randn(120, 80), torch.randn(1, 80)]
    alone = torch.stack([embedder.embed(f) for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=7.0)
    with torch.no_grad():
        batched = embedder.model(padded, torch.tensor([57, 120, 1]))
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_infer_on_wav_scp_only_with_an_empty_file(exp: Path, corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    wav_scp = dict(read_table(corpus / "test" / "wav.scp"))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    long_utt = tmp_path / "long.flac"  # any length: 12 s, far longer than the training crops
    sf.write(long_utt, np.concatenate([_speaker_audio(np.random.default_rng(4), 1, 1.0)] * 12), SR)
    wav_scp.update({"zz-empty": str(empty), "zz-long": str(long_utt)})
    write_table(data / "wav.scp", wav_scp)
    out = tmp_path / "out"
    infer_dir(exp, data, out)

    failed = (out / "failed.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("zz-empty ") and "empty" in failed[0]
    predictions = [line.split() for line in (out / "predictions.txt").read_text().splitlines()]
    assert [p[0] for p in predictions] == sorted(set(wav_scp) - {"zz-empty"})
    for _, speaker, score in predictions:
        assert speaker in SPEAKERS and -1.0 <= float(score) <= 1.0  # AAM head: cosine score
    embeddings = dict(kaldiio.load_scp(str(out / "embeddings.scp")))
    assert sorted(embeddings) == [p[0] for p in predictions]
    assert all(np.asarray(v).shape == (16,) and np.isfinite(v).all() for v in embeddings.values())
    # The stored embedding is the model's embedding of the whole utterance, and gives the stored prediction.
    embedder = SpeakerEmbedder.from_exp_dir(exp)
    from speechattn.data.audio import load_audio
    first = predictions[0][0]
    expected = embedder.embed_waveform(load_audio(wav_scp[first]))
    np.testing.assert_allclose(embeddings[first], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert embedder.predict(expected)[0] == predictions[0][1]

    # Complete outputs are skipped; force=true redoes them.
    mtime = (out / "predictions.txt").stat().st_mtime_ns
    infer_dir(exp, data, out)
    assert (out / "predictions.txt").stat().st_mtime_ns == mtime
    infer_dir(exp, data, out, force=True)
    assert (out / "predictions.txt").stat().st_mtime_ns != mtime
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # Other settings that change the outputs (crop-averaged embeddings, precision) redo them; the batch size
    # does not (same outputs). Crops are computed per utterance even with batch_frames set.
    mtime = (out / "predictions.txt").stat().st_mtime_ns
    infer_dir(exp, data, out, batch_frames=500)
    assert (out / "predictions.txt").stat().st_mtime_ns == mtime
    infer_dir(exp, data, out, batch_frames=500, embedding="crops", crop_frames=40)
    assert (out / "predictions.txt").stat().st_mtime_ns != mtime
    cropped = dict(kaldiio.load_scp(str(out / "embeddings.scp")))
    long_wave = load_audio(str(long_utt))
    np.testing.assert_allclose(cropped["zz-long"], embedder.predict_waveform(
        long_wave, embedding="crops", crop_frames=40).embedding.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(cropped["zz-long"], embeddings["zz-long"], atol=1e-4)
    mtime = (out / "predictions.txt").stat().st_mtime_ns
    infer_dir(exp, data, out, precision="bf16", embedding="crops", crop_frames=40)
    assert (out / "predictions.txt").stat().st_mtime_ns != mtime


def test_score_identification_and_verification(exp: Path, corpus: Path, tmp_path: Path) -> None:
    test_dir = corpus / "test"
    out = tmp_path / "decode"
    infer_dir(exp, test_dir, out)
    trials_dir = tmp_path / "ref"
    trials_dir.mkdir()
    (trials_dir / "utt2spk").write_text((test_dir / "utt2spk").read_text())
    write_trials(trials_dir / "trials", make_trials(read_table(test_dir / "utt2spk"), nontarget_ratio=2.0))
    cfg = OmegaConf.create({"task": "sid", "exp_dir": str(exp), "ref_dir": str(trials_dir), "hyp_dir": str(out),
                            "output_dir": str(tmp_path / "scores"), "trials": None, "p_target": 0.01,
                            "embedding_plot_speakers": 20, "embedding_plot_method": "pca"})
    scores = score_sid(cfg)
    # Top-1 recomputed here from predictions.txt and utt2spk.
    utt2spk = read_table(test_dir / "utt2spk")
    predicted = {u: v.split()[0] for u, v in read_table(out / "predictions.txt").items()}
    expected_top1 = 100 * np.mean([predicted[u] == s for u, s in utt2spk.items()])
    assert scores["identification"]["top1"] == pytest.approx(expected_top1, abs=0.01)
    assert scores["identification"]["top5"] == 100.0  # 3 speakers: always within the top 5
    verif = scores["verification"]
    assert verif["num_target"] == 3 * 3 and verif["num_nontarget"] == 18
    assert 0 <= verif["eer"] <= 100 and verif["min_dcf"] >= 0
    for name in ("scores.json", "det.png", "embeddings.png", "training_curves.png"):
        assert (tmp_path / "scores" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "scores" / "scores.json").read_text())["identification"]["top1"] == \
        scores["identification"]["top1"]
    # The results table reads it back.
    from speechattn.bin.results_table import main as results_main
    exp_root = tmp_path / "exp_root"
    (exp_root / "ident").mkdir(parents=True)
    (exp_root / "ident" / "scores").symlink_to(tmp_path / "scores")
    results_main(["task=sid", f"exp_root={exp_root}", f"output={tmp_path / 'RESULTS.md'}"])
    table = (tmp_path / "RESULTS.md").read_text()
    assert f"{scores['identification']['top1']:.2f}" in table and f"{verif['eer']:.2f}" in table


def test_identification_by_plda_and_by_the_fusion_of_head_and_plda(exp: Path, corpus: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    test_dir = corpus / "test"
    out = tmp_path / "decode"
    infer_dir(exp, test_dir, out)
    cfg = OmegaConf.create({"task": "sid", "exp_dir": str(exp), "ref_dir": str(test_dir), "hyp_dir": str(out),
                            "output_dir": str(tmp_path / "scores"), "plda": True, "plda_lda_dim": 100,
                            "embedding_plot_method": "pca"})
    ident = score_sid(cfg)["identification"]
    assert ident["plda"]["lda_dim"] == len(SPEAKERS) - 1 and (exp / "plda" / "plda.json").is_file()
    utt2spk = read_table(test_dir / "utt2spk")
    fused = read_table(tmp_path / "scores" / "predictions_fused.txt")
    assert sorted(fused) == sorted(utt2spk)
    assert ident["fused"]["top1"] == pytest.approx(100 * np.mean([fused[u] == s for u, s in utt2spk.items()]),
                                                   abs=0.01)
    assert ident["plda"]["top5"] == ident["fused"]["top5"] == 100.0  # 3 speakers
    from speechattn.bin.results_table import sid_row
    row = sid_row(exp, {"identification": ident})
    assert row["top1_plda"] == f"{ident['plda']['top1']:.2f}" and row["top1_fused"] == f"{ident['fused']['top1']:.2f}"
    # The stored back-end holds the enrolled speakers: scoring again needs no training features; without
    # them and without a stored back-end the head's scores are still given, with a warning.
    feats, stored = corpus / "train" / "feats.scp", exp / "plda"
    feats.rename(feats.with_suffix(".away"))
    try:
        again = score_sid(OmegaConf.merge(cfg, {"output_dir": str(tmp_path / "scores2")}))["identification"]
        stored.rename(tmp_path / "plda_away")
        with caplog.at_level(logging.WARNING):
            alone = score_sid(OmegaConf.merge(cfg, {"output_dir": str(tmp_path / "scores3")}))["identification"]
    finally:
        feats.with_suffix(".away").rename(feats)
        if (tmp_path / "plda_away").exists():
            (tmp_path / "plda_away").rename(stored)
    assert again["fused"] == ident["fused"] and again["plda"] == ident["plda"]
    assert "plda" not in alone and alone["top1"] == ident["top1"]
    assert "no PLDA identification scores" in caplog.text and str(feats) in caplog.text


def test_synthetic_speakers_are_learned(exp: Path) -> None:
    history = json.loads((exp / "history.json").read_text())
    assert max(r["valid_acc"] for r in history) >= 0.8, history
