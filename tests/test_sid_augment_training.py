"""Issue #14 phase B wiring: waveform augmentation in the sid task's training crops, model selection by
the task's metric (dev EER / dev top-1) through the Trainer's epoch hook with exact resume, best-N
averaging, full-length vs cropped test embeddings, AS-norm in scoring (toy sizes, synthetic speakers)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from augment_data import make_rirs_noises
from test_sid_infer import SPEAKERS, _make_dir, _features, _overrides, _train
from speechattn.bin.compute_cmvn import compute_cmvn_stats
from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter
from speechattn.data.augment.sources import SpeechBank
from speechattn.data.kaldi_dir import KaldiDataError, read_table
from speechattn.data.sid_splits import make_trials
from speechattn.data.speakers import write_speakers
from speechattn.data.trials import read_trials, write_trials
from speechattn.features.extract import FeatureConfig, compute_features
from speechattn.inference.driver import infer_dir
from speechattn.metrics.score_norm import make_cohort, save_cohort
from speechattn.tasks import get_task
from speechattn.tasks.sid_augment import AugmentedCropDataset, head_classes
from speechattn.tasks.sid_predictor import SpeakerEmbedder
from speechattn.tasks.sid_scoring import read_embeddings, score_sid
from speechattn.utils.checkpoint import load_checkpoint

SIX = [f"spk{c}" for c in "ABCDEF"]  # enough speakers to hold 2 back for dev EER


def _bank(n: int = 4, seconds: float = 1.5) -> SpeechBank:
    rng = np.random.default_rng(0)
    return SpeechBank([f"u{i}" for i in range(n)], [f"s{i % 2}" for i in range(n)],
                      [torch.from_numpy((0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32))
                       for _ in range(n)])


def _dataset(aug: dict, bank: SpeechBank | None = None, seed: int = 3) -> AugmentedCropDataset:
    bank = bank or _bank()
    augmenter = WaveAugmenter(AugmentConfig.from_dict(aug), seed=seed, bank=bank)
    return AugmentedCropDataset(bank, {u: i % 2 for i, u in enumerate(bank.utts)}, FeatureConfig(num_mel_bins=20),
                                lambda utt, f: f - 1.0, augmenter, num_speakers=2, crop=(60, 90), seed=seed)


# ---------------------------------------------------------------------------------------- dataset

def test_augmented_crops_are_reproducible_from_seed_epoch_and_index() -> None:
    aug = {"speed": {"prob": 0.7, "factors": [0.9, 1.1]}, "babble": {"prob": 0.5}, "nonspeech": {"prob": 0.0}}
    a, b = _dataset(aug), _dataset(aug)
    for epoch in (0, 1):
        a.epoch = b.epoch = epoch
        for i in reversed(range(len(a))):  # other order, other process: same crop
            x, y = a[i], b[i]
            assert torch.equal(x.feats, y.feats) and x.target == y.target
            assert 60 <= x.feats.shape[0] <= 90 and x.feats.shape[1] == 20
    a.epoch = 0
    first = [a[i].feats for i in range(len(a))]
    a.epoch = 1
    assert any(not torch.equal(f, a[i].feats) for i, f in enumerate(first))  # epochs differ
    assert not torch.equal(_dataset(aug, seed=4)[0].feats, _dataset(aug)[0].feats)  # seeds differ


def test_crop_features_equal_the_utterance_features_without_augmentation() -> None:
    """Augmentation off -> a crop's features are the stage-1 features of the same frames (CMVN applied)."""
    ds = _dataset({"enabled": True})  # enabled, but no kind has a probability
    cfg = FeatureConfig(num_mel_bins=20)
    for i in range(len(ds)):
        whole = compute_features(ds.bank.waveform(i), 16000, cfg) - 1.0
        from speechattn.data.crops import crop_window
        start, length = crop_window(len(whole), 60, 90, ds.seed, 0, i)
        torch.testing.assert_close(ds[i].feats, whole[start:start + length], rtol=0, atol=1e-4)


@pytest.mark.parametrize("as_new, expected", [(True, {0, 1, 2, 3, 4, 5}), (False, {0, 1})])
def test_speed_targets_new_speaker_or_same(as_new: bool, expected: set[int]) -> None:
    ds = _dataset({"speed": {"prob": 1.0, "factors": [0.9, 1.1], "as_new_speaker": as_new}}, _bank(8))
    seen = set()
    for epoch in range(4):
        ds.epoch = epoch
        for i in range(len(ds)):
            ex = ds[i]
            speed_index, _ = ds.augmenter.speed(epoch, i)
            assert ex.target == (i % 2) + (2 * speed_index if as_new else 0)
            seen.add(ex.target)
    if as_new:
        assert seen <= expected and len(seen) > 2
    else:
        assert seen == expected


def test_head_classes_follow_the_stored_config() -> None:
    speed = {"augment": {"speed": {"prob": 0.5, "factors": [0.9, 1.1], "as_new_speaker": True}}}
    assert head_classes(speed, 10) == 30
    assert head_classes({"augment": {"speed": {"prob": 0.5, "as_new_speaker": False}}}, 10) == 10
    assert head_classes({"augment": {"enabled": False, "speed": {"prob": 0.5}}}, 10) == 10
    assert head_classes({}, 10) == 10


# ----------------------------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def corpus6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import test_sid_infer

    root = tmp_path_factory.mktemp("sid6")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_sid_infer, "SPEAKERS", SIX)  # _make_dir's pitch index covers the six
        for name, per_speaker, seed in (("train", 4, 1), ("dev", 1, 2), ("test", 2, 3)):
            d = _make_dir(root, name, per_speaker, seed, speakers=SIX)
            _features(d)
    compute_cmvn_stats(root / "train", "global")
    write_speakers(root / "train" / "speakers.txt", SIX)
    utt2spk = read_table(root / "test" / "utt2spk")
    write_trials(root / "test" / "trials", make_trials(utt2spk, 1.0, seed=1))
    make_rirs_noises(root, rooms=("smallroom",), per_room=2)
    return root


def _aug_overrides(corpus: Path, exp: Path, *extra: str) -> list[str]:
    base = [o for o in _overrides(corpus, exp) if o != "augment=none"]
    return base + ["augment=speaker", f"augment.reverb.rir_dir={corpus}/RIRS_NOISES", "augment.reverb.rooms=[smallroom]",
                                      "make_rir_set=false", "trainer.max_frames_per_batch=240",
                                      "augment.nonspeech.prob=0", *extra]  # tones without pauses: no noise


def test_augmented_training_selects_by_dev_eer_and_resumes_exactly(corpus6: Path, tmp_path: Path) -> None:
    common = ["trainer.max_epochs=3", "trainer.save_every_steps=1", "trainer.select_by=dev_eer",
              "trainer.dev_speakers=0.34", "trainer.keep_best=2", "trainer.keep_checkpoints=3"]
    _train(_aug_overrides(corpus6, tmp_path / "straight", *common))
    straight = tmp_path / "straight"
    ckpt = load_checkpoint(straight / "checkpoints" / "last.pt")
    steps = load_checkpoint(straight / "checkpoints" / "epoch-1.pt")["step"]
    history = ckpt["history"]
    assert all("dev_eer" in row and "dev_min_dcf" in row for row in history)
    values = {int(e): v for e, v in ckpt["epoch_hook"]["values"].items()}
    best = min(values, key=lambda e: (values[e], e))
    assert load_checkpoint(straight / "model.pt")["epoch"] == best  # model.pt = the best dev EER epoch
    ranked = json.loads((straight / "checkpoints" / "best" / "best.json").read_text())["best"]
    assert [r["epoch"] for r in ranked] == sorted(values, key=lambda e: (values[e], e))[:2]
    assert sorted(p.name for p in (straight / "checkpoints" / "best").glob("epoch-*.pt")) == sorted(
        f"epoch-{r['epoch']}.pt" for r in ranked)
    # 6 listed speakers (2 held back, never trained on) x 3 speeds in the head
    assert ckpt["model"]["head.weight"].shape[0] == 18

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _train(_aug_overrides(corpus6, interrupted, *common, f"trainer.stop_after_steps={steps + 1}"))
    _train(_aug_overrides(corpus6, interrupted, *common))
    again = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert again["step"] == ckpt["step"] and again["epoch_hook"] == ckpt["epoch_hook"]
    for key in ckpt["model"]:
        torch.testing.assert_close(ckpt["model"][key], again["model"][key], rtol=0, atol=1e-6, msg=key)


def test_average_best_writes_model_pt_and_keeps_the_best(corpus6: Path, tmp_path: Path) -> None:
    exp = tmp_path / "avg"
    _train(_overrides(corpus6, exp) + ["trainer.max_epochs=3", "trainer.average_best=2"])
    model = load_checkpoint(exp / "model.pt")
    best = load_checkpoint(exp / "model_best.pt")
    ranked = json.loads((exp / "checkpoints" / "best" / "best.json").read_text())
    assert ranked["metric"] == "dev_top1" and model["averaged_epochs"] == [r["epoch"] for r in ranked["best"][:2]]
    weights = [load_checkpoint(exp / "checkpoints" / "best" / r["weights"])["model"] for r in ranked["best"][:2]]
    key = "embedding.weight"
    torch.testing.assert_close(model["model"][key], (weights[0][key] + weights[1][key]) / 2)
    assert best["epoch"] == ranked["best"][0]["epoch"]
    SpeakerEmbedder.from_exp_dir(exp)  # the averaged model.pt loads for inference


def test_average_best_without_a_dev_metric_is_a_warning(corpus6: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """select_by=valid_acc keeps no best-N weights (speechocean762's verification): averaging cannot apply,
    and training says so instead of silently ignoring the recipes' --average-best."""
    exp = tmp_path / "validacc"
    with caplog.at_level("WARNING", logger="speechattn.training.setup"):
        _train(_overrides(corpus6, exp) + ["trainer.max_epochs=1", "trainer.average_best=3",
                                           "trainer.select_by=valid_acc"])
    assert "trainer.average_best=3 has no effect" in caplog.text
    assert "averaged_epochs" not in load_checkpoint(exp / "model.pt")


def test_missing_rir_dir_is_an_error_unless_made(corpus6: Path, tmp_path: Path) -> None:
    overrides = [o for o in _overrides(corpus6, tmp_path / "x") if o != "augment=none"] + [
        "augment=speaker", f"augment.reverb.rir_dir={tmp_path}/nowhere", "make_rir_set=false",
        "trainer.max_epochs=1", "augment.nonspeech.prob=0"]
    with pytest.raises(KaldiDataError, match="nowhere"):
        _train(overrides)


# ------------------------------------------------------------------------ inference and scoring

@pytest.fixture(scope="module")
def verif_exp(corpus6: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = tmp_path_factory.mktemp("exp6") / "verif"
    _train(_aug_overrides(corpus6, exp, "trainer.max_epochs=2", f"+data.trials={corpus6}/test/trials"))
    return exp


def test_predictions_are_training_speakers_with_speed_classes(verif_exp: Path, corpus6: Path) -> None:
    embedder = SpeakerEmbedder.from_exp_dir(verif_exp)
    assert embedder.model.head.weight.shape[0] == 3 * len(SIX)
    emb = embedder.embed(torch.randn(120, 80))
    assert embedder.scores(emb).shape == (len(SIX),)  # speed copies are not speakers


def test_crop_embeddings(verif_exp: Path) -> None:
    embedder = SpeakerEmbedder.from_exp_dir(verif_exp)
    feats = torch.randn(250, 80)
    torch.testing.assert_close(embedder.embed_crops(feats[:80], 100), embedder.embed(feats[:80]))  # short: whole
    crops = [embedder.embed(feats[s:s + 100]) for s in (0, 50, 100, 150)]
    expected = torch.stack([c / c.norm() for c in crops]).mean(0)
    torch.testing.assert_close(embedder.embed_crops(feats, 100), expected, rtol=1e-5, atol=1e-5)
    wave = 0.1 * torch.randn(16000)
    full = embedder.predict_waveform(wave)
    cropped = embedder.predict_waveform(wave, embedding="crops", crop_frames=40)
    assert not torch.allclose(full.embedding, cropped.embedding)
    with pytest.raises(ValueError, match="full' or 'crops"):
        embedder.predict_waveform(wave, embedding="middle")


def test_scoring_reports_raw_asnorm_and_plda_and_refuses_another_models_cohort(verif_exp: Path, corpus6: Path,
                                                                                tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    hyp = tmp_path / "decode"
    infer_dir(verif_exp, corpus6 / "test", hyp)
    cfg = OmegaConf.create({"exp_dir": str(verif_exp), "ref_dir": str(corpus6 / "test"), "hyp_dir": str(hyp),
                            "output_dir": str(tmp_path / "scores"), "asnorm": True, "asnorm_top_n": 3,
                            "plda": True, "plda_lda_dim": 100, "embedding_plot_method": "pca"})
    import speechattn.tasks.sid_cohort as sid_cohort
    calls = []
    embed = sid_cohort.embed_training_set
    monkeypatch.setattr(sid_cohort, "embed_training_set", lambda *a: calls.append(a) or embed(*a))
    scores = score_sid(cfg)
    assert len(calls) == 1  # the training speakers are embedded once for the cohort and the PLDA back-end
    verif = scores["verification"]
    assert verif["asnorm"]["cohort_speakers"] == len(SIX) and 0 <= verif["asnorm"]["eer"] <= 100
    assert verif["plda"]["lda_dim"] == len(SIX) - 1 and 0 <= verif["plda"]["eer"] <= 100  # capped: 6 speakers
    assert (verif_exp / "cohort" / "cohort.json").is_file() and (verif_exp / "plda" / "plda.json").is_file()
    raw = np.loadtxt(tmp_path / "scores" / "trial_scores.txt", usecols=0)
    normed = np.loadtxt(tmp_path / "scores" / "trial_scores_asnorm.txt", usecols=0)
    llr = np.loadtxt(tmp_path / "scores" / "trial_scores_plda.txt", usecols=0)
    assert raw.shape == normed.shape == llr.shape and not np.allclose(raw, normed) and not np.allclose(raw, llr)
    from speechattn.bin.results_table import sid_row
    row = sid_row(verif_exp, scores)
    assert row["eer_asnorm"] == f"{verif['asnorm']['eer']:.2f}" and row["eer"] == f"{verif['eer']:.2f}"
    assert row["eer_plda"] == f"{verif['plda']['eer']:.2f}"
    # PLDA's scores AS-normalised against its enrolment recordings (the training speakers' 4 each), top 20
    from speechattn.metrics.plda import load_plda_backend
    from speechattn.metrics.score_norm import adaptive_snorm
    assert verif["plda_asnorm"]["cohort_recordings"] == 4 * len(SIX) and verif["plda_asnorm"]["top_n"] == 20
    plda_normed = np.loadtxt(tmp_path / "scores" / "trial_scores_plda_asnorm.txt", usecols=0)
    backend, embedded = load_plda_backend(verif_exp / "plda"), read_embeddings(hyp / "embeddings.scp")
    trials = read_trials(corpus6 / "test" / "trials")
    first, second = (backend.cohort_scores(np.stack([embedded[t[k]] for t in trials])) for k in (1, 2))
    top_mean, top_std = (lambda m: np.sort(m, axis=1)[:, -20:].mean(1)), (lambda m: np.sort(m, axis=1)[:, -20:].std(1))
    np.testing.assert_allclose(plda_normed, adaptive_snorm(llr, top_mean(first), top_std(first), top_mean(second),
                                                           top_std(second)), rtol=1e-5, atol=1e-5)
    assert row["eer_plda_asnorm"] == f"{verif['plda_asnorm']['eer']:.2f}"
    assert "plda_asnorm" not in score_sid(OmegaConf.merge(cfg, {"asnorm": False}))["verification"]
    again = score_sid(cfg)  # stored back-ends are reused, not retrained
    assert len(calls) == 1 and again["verification"]["plda"] == verif["plda"]
    score_sid(OmegaConf.merge(cfg, {"plda_lda_dim": 3}))  # another LDA dimension retrains it
    assert len(calls) == 2 and json.loads((verif_exp / "plda" / "plda.json").read_text())["lda_dim"] == 3
    with pytest.raises(KaldiDataError, match="plda.json.*retrain it with this model"):
        score_sid(OmegaConf.merge(cfg, {"plda_dir": str(_foreign_plda(tmp_path / "other_plda"))}))

    other = tmp_path / "other_cohort"  # a cohort from other weights
    rng = np.random.default_rng(0)
    save_cohort(other, make_cohort({f"u{i}": rng.standard_normal(16) for i in range(4)},
                                   {f"u{i}": f"s{i % 2}" for i in range(4)}, "0" * 64))
    with pytest.raises(KaldiDataError, match="cohort.json.*recompute"):
        score_sid(OmegaConf.merge(cfg, {"asnorm_cohort": str(other)}))


def _foreign_plda(out: Path) -> Path:
    """A PLDA back-end stored with the fingerprint of other weights."""
    from speechattn.metrics.plda import fit_plda_backend, save_plda_backend
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    save_plda_backend(out, fit_plda_backend(rng.standard_normal((12, 16)), labels, 2), "0" * 64)
    return out


def test_plda_is_skipped_with_a_warning_below_three_training_speakers(verif_exp: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from speechattn.tasks.sid_cohort import plda_for
    embedder = SpeakerEmbedder.from_exp_dir(verif_exp)
    rng = np.random.default_rng(0)
    embeddings = {f"u{i}": rng.standard_normal(16) for i in range(6)}
    utt2spk = {f"u{i}": f"s{i % 2}" for i in range(6)}
    with caplog.at_level(logging.WARNING):
        assert plda_for(embedder, tmp_path, training=lambda: (embeddings, utt2spk)) is None
    assert "no PLDA back-end" in caplog.text and "2 speakers" in caplog.text
    assert not (tmp_path / "plda").exists()


def test_plda_with_speed_perturbed_copies_of_the_training_recordings(verif_exp: Path, corpus6: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    import speechattn.tasks.sid_cohort as sid_cohort
    from speechattn.data.audio import load_audio
    from speechattn.data.speed_perturb import apply_speed
    embedder = SpeakerEmbedder.from_exp_dir(verif_exp)
    exp = tmp_path / "exp"
    backend = sid_cohort.plda_for(embedder, exp, speeds=[0.9, 1.1])
    meta = json.loads((exp / "plda" / "plda.json").read_text())
    assert meta["speeds"] == [0.9, 1.1] and backend.speeds == (0.9, 1.1)
    assert meta["num_speakers"] == 3 * len(SIX) and meta["num_utterances"] == 3 * 4 * len(SIX)  # each speed a speaker
    assert sorted(backend.enrol_speakers) == SIX and list(backend.enrol_counts) == [4] * len(SIX)  # unperturbed only
    wav = read_table(corpus6 / "train" / "wav.scp")
    utt = sorted(wav)[0]
    [(got_utt, speed, vector)] = sid_cohort.embed_training_set_at_speeds(embedder, corpus6 / "train", [utt], [0.9])
    expected = embedder.embed_waveform(apply_speed(load_audio(wav[utt]), 16000, 0.9), utt)
    assert got_utt == utt and speed == 0.9
    np.testing.assert_allclose(vector, expected.numpy(), rtol=1e-5, atol=1e-6)
    calls = []
    at_speeds = sid_cohort.embed_training_set_at_speeds
    monkeypatch.setattr(sid_cohort, "embed_training_set_at_speeds", lambda *a: calls.append(a) or at_speeds(*a))
    assert sid_cohort.plda_for(embedder, exp, speeds=[0.9, 1.1]).speeds == (0.9, 1.1) and not calls  # stored: reused
    assert sid_cohort.plda_for(embedder, exp, speeds=[]).speeds == () and not calls  # other speeds: retrained
    assert json.loads((exp / "plda" / "plda.json").read_text())["num_speakers"] == len(SIX)
    # bad input: no wav.scp, a recording that is not there (the wav.scp line is named)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(KaldiDataError, match=r"bare/wav.scp:0: missing.*plda_speeds=\[\]"):
        at_speeds(embedder, bare, [utt], [0.9])
    (bare / "wav.scp").write_text(f"{utt} {tmp_path / 'gone.flac'}\n")
    with pytest.raises(Exception, match=r"wav.scp:1"):
        at_speeds(embedder, bare, [utt], [0.9])


def test_plda_speeds_auto_follows_the_models_training(verif_exp: Path) -> None:
    from speechattn.tasks.sid_scoring import plda_speeds
    trained_with_speeds = SpeakerEmbedder.from_exp_dir(verif_exp).config  # augment=speaker: speeds as new speakers
    assert plda_speeds("auto", trained_with_speeds) == [0.9, 1.1]
    assert plda_speeds("auto", OmegaConf.merge(trained_with_speeds, {"augment": {"speed": {"as_new_speaker": False}}})) == []
    assert plda_speeds("auto", {"augment": {"enabled": False}}) == [] and plda_speeds("auto", {}) == []
    assert plda_speeds([1.2], {}) == [1.2] and plda_speeds(None, {}) == []
    with pytest.raises(ValueError, match="plda_speeds must be 'auto' or a list"):
        plda_speeds("fast", {})


def test_a_stored_plda_back_end_without_enrolled_speakers_gets_them_when_asked(verif_exp: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    import dataclasses

    from speechattn.metrics.plda import load_plda_backend, save_plda_backend
    from speechattn.tasks.sid_cohort import plda_for
    from speechattn.utils.fingerprint import state_dict_fingerprint
    embedder = SpeakerEmbedder.from_exp_dir(verif_exp)
    backend = plda_for(embedder, tmp_path / "exp")
    fingerprint = state_dict_fingerprint(embedder.model.state_dict())
    old = dataclasses.replace(backend, enrol_speakers=None, enrol_counts=None, enrol_means=None,
                              enrol_vectors=None)  # as stored before identification used it
    save_plda_backend(tmp_path / "old", old, fingerprint)
    assert plda_for(embedder, tmp_path / "exp", tmp_path / "old").enrol_speakers is None  # verification: as stored
    again = plda_for(embedder, tmp_path / "exp", tmp_path / "old", enrolled=True)
    assert sorted(again.enrol_speakers) == SIX
    np.testing.assert_allclose(again.enrol_means, backend.enrol_means)
    np.testing.assert_array_equal(again.enrol_vectors, backend.enrol_vectors)
    # stored before PLDA's scores were AS-normalised: speakers enrolled, recordings not kept
    save_plda_backend(tmp_path / "mid", dataclasses.replace(backend, enrol_vectors=None), fingerprint)
    assert plda_for(embedder, tmp_path / "exp", tmp_path / "mid").enrol_vectors is None
    np.testing.assert_array_equal(plda_for(embedder, tmp_path / "exp", tmp_path / "mid", enrolled=True).enrol_vectors,
                                  backend.enrol_vectors)
    # the experiment's own stored back-end: completed once and written back (a given plda_dir is left as it is)
    import speechattn.tasks.sid_cohort as sid_cohort
    own = tmp_path / "exp" / "plda"
    before = json.loads((own / "plda.json").read_text())
    save_plda_backend(own, dataclasses.replace(backend, enrol_vectors=None), fingerprint, source=before["source"],
                      num_utterances=before["num_utterances"], num_speakers=before["num_speakers"])
    calls = []
    embed = sid_cohort.embed_training_set
    monkeypatch.setattr(sid_cohort, "embed_training_set", lambda *a: calls.append(a) or embed(*a))
    for _ in range(2):
        assert plda_for(embedder, tmp_path / "exp", enrolled=True).enrol_vectors is not None
    assert len(calls) == 1 and json.loads((own / "plda.json").read_text()) == before
    assert load_plda_backend(own).enrol_vectors is not None
    assert load_plda_backend(tmp_path / "mid").enrol_vectors is None
