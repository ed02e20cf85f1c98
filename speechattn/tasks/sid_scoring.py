"""Scores and pictures of a speaker experiment (``speechattn-score``, stage 5 of the sid recipes).

    speechattn-score task=sid exp_dir=EXP ref_dir=data/ident_test hyp_dir=EXP/decode_ident_test output_dir=EXP/scores
    speechattn-score task=sid exp_dir=EXP ref_dir=data/verif_test hyp_dir=EXP/decode_verif_test output_dir=EXP/scores

What is scored depends on the reference directory (``ref_dir/utt2spk``):

- **identification** when every reference speaker is a training speaker (closed set, e.g. ident_test):
  top-1 and top-5 accuracy, from the embeddings (``hyp_dir/embeddings.scp``) scored against every
  training speaker by the model's head (the top-1 agrees with ``predictions.txt``, checked);
  with ``plda=true`` also by the LDA + PLDA back-end with every training speaker enrolled by its training
  recordings (:meth:`~speechattn.metrics.plda.PldaBackend.speaker_log_likelihoods`), and by the fusion of
  the head's and PLDA's scores (:func:`~speechattn.metrics.identification.fuse_scores`; its top-1 per
  utterance in ``predictions_fused.txt``): side by side in ``scores.json`` (``plda``, ``fused``);
- **verification** when ``trials`` (default ``ref_dir/trials``) exists: each ``LABEL UTT1 UTT2`` trial is
  the cosine of the two embeddings; EER and minDCF (``p_target``, default 0.01) with
  :mod:`speechattn.metrics.verification`, and a DET curve (``det.png``); with ``asnorm`` / ``plda`` also
  AS-norm of the cosine scores (``asnorm``), LDA + PLDA LLRs (``plda``) and those LLRs AS-normalised
  against the back-end's training recordings (``plda_asnorm``), each with its ``trial_scores_*.txt``.

Always: a 2-D plot of the test embeddings of ``embedding_plot_speakers`` speakers (``embeddings.png``),
``training_curves.png`` (copied) and ``scores.json`` (metrics + experiment facts for ``speechattn-results``).
Utterances listed in ``hyp_dir/failed.txt`` are an error (the scores would silently cover fewer trials).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from speechattn.data.kaldi_dir import KaldiDataError, read_table
from speechattn.models.encoders import describe_context
from speechattn.tasks.base import check_no_failures, experiment_facts
from speechattn.tasks.sid_predictor import SpeakerEmbedder
from speechattn.utils.atomic import atomic_write_text
from speechattn.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def read_embeddings(scp: Path, *, allow_pipes: bool = False) -> dict[str, np.ndarray]:
    """``embeddings.scp`` -> ``{utt: (E,) float32}`` (kaldiio; commands refused unless ``allow_pipes``)."""
    from speechattn.data.kaldi_io import read_scp

    if not scp.is_file():
        raise KaldiDataError(f"{scp}:0: missing (run speechattn-infer first)")
    return {utt: np.asarray(vec, dtype=np.float32)
            for utt, vec in read_scp(scp, allow_pipes=allow_pipes, check_sorted=False).items()}


def _experiment_facts(exp_dir: Path) -> dict[str, Any]:
    """Training facts for the results table: epochs, dev accuracy, train time, parameters, configs, and the
    encoder's description (the results table's encoder column; no model names are tested there)."""
    facts = experiment_facts(exp_dir)
    ckpt = load_checkpoint(exp_dir / "model.pt")
    facts["num_train_speakers"] = len(ckpt.get("speakers", []))
    config = ckpt.get("config", {})
    for key in ("model", "sid", "cmvn"):
        if key in config:
            facts[key] = config[key]
    if "trainer" in config:
        facts["crop_frames"] = [config["trainer"].get("crop_min_frames"), config["trainer"].get("crop_max_frames")]
    return facts


def describe_encoder(embedder: SpeakerEmbedder) -> str:
    """``"truncated_transformer 3x128, [t-64, t+64] × 3 layers, 40 ms positions"``: name, size, context."""
    model = embedder.config.get("model", {})
    stack = embedder.model.encoder  # FrameStackEncoder
    size = f"{model.get('num_layers', '?')}x{model.get('d_model', '?')}"
    context = describe_context(stack.encoder, stack.factor)
    return f"{model.get('name', '?')} {size}, {context}, {10 * stack.factor} ms positions"


def score_identification(embedder, embeddings: dict[str, np.ndarray], utt2spk: dict[str, str],
                         predictions: dict[str, str] | None, plda: Any = None,
                         out: Path | None = None) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%) of the closed-set speaker scores of every reference utterance; with a
    ``plda`` back-end that has the training speakers enrolled also of PLDA's and the fused scores
    (``out/predictions_fused.txt``: the fused top-1)."""
    from speechattn.metrics.identification import fuse_scores, topk_accuracy

    utts = sorted(utt2spk)
    missing = [u for u in utts if u not in embeddings]
    if missing:
        raise KaldiDataError(f"no embedding for {len(missing)} reference utterance(s), e.g. '{missing[0]}'")
    index = {spk: i for i, spk in enumerate(embedder.speakers)}
    matrix = torch.from_numpy(np.stack([embeddings[u] for u in utts]))
    scores = embedder.scores(matrix).numpy()
    targets = np.array([index[utt2spk[u]] for u in utts], dtype=np.int64)
    accuracy = topk_accuracy(scores, targets, ks=(1, 5))
    result = {"num_utterances": len(utts), "num_speakers": len(set(utt2spk.values())),
              "top1": round(100 * accuracy[1], 2), "top5": round(100 * accuracy[5], 2)}
    if predictions is not None:
        best = scores.argmax(axis=1)
        disagree = sum(predictions.get(u) != embedder.speakers[b] for u, b in zip(utts, best))
        if disagree:
            log.warning("%d predictions.txt entries differ from the top-1 of the stored embeddings", disagree)
        result["predictions_disagreeing"] = disagree
    if plda is not None:
        log_lik = plda.speaker_log_likelihoods(matrix.numpy(), embedder.speakers)  # (N, S)
        fused = fuse_scores(scores, log_lik)
        for key, kind in (("plda", log_lik), ("fused", fused)):
            acc = topk_accuracy(kind, targets, ks=(1, 5))
            result[key] = {"top1": round(100 * acc[1], 2), "top5": round(100 * acc[5], 2)}
        result["plda"]["lda_dim"] = int(plda.lda.shape[1])
        if out is not None:
            lines = [f"{u} {embedder.speakers[b]}\n" for u, b in zip(utts, fused.argmax(axis=1))]
            atomic_write_text(out / "predictions_fused.txt", "".join(lines))
    return result


def score_verification(trials_path: Path, embeddings: dict[str, np.ndarray], p_target: float,
                       out: Path, title: str, cohort: Any = None, top_n: int = 100,
                       subtract_mean: bool = False, plda: Any = None, plda_top_n: int = 0) -> dict[str, Any]:
    """EER, minDCF and the DET curve of the cosine-scored trials; with a ``cohort``
    (:class:`~speechattn.metrics.score_norm.Cohort`) also of their AS-normalised scores (``asnorm``), with a
    ``plda`` back-end (:class:`~speechattn.metrics.plda.PldaBackend`) also of its LLR scores (``plda``), and
    with ``plda_top_n`` > 0 of those LLRs AS-normalised against the back-end's enrolment recordings
    (``plda_asnorm``)."""
    from speechattn.data.trials import read_trials
    from speechattn.metrics.verification import compute_eer, compute_min_dcf, det_curve, score_trials
    from speechattn.plots.det import plot_det

    trials = read_trials(trials_path)
    if not trials:
        raise KaldiDataError(f"{trials_path}:0: no trials")
    scores = score_trials(trials, embeddings)
    labels = np.array([t[0] for t in trials], dtype=bool)
    target, nontarget = scores[labels], scores[~labels]
    if target.size == 0 or nontarget.size == 0:
        raise KaldiDataError(f"{trials_path}:0: needs both target and non-target trials "
                             f"({target.size} target, {nontarget.size} non-target)")
    eer, eer_threshold = compute_eer(target, nontarget)
    min_dcf, dcf_threshold = compute_min_dcf(target, nontarget, p_target=p_target)
    # The two operating points VoxCeleb results are usually given at (Vox1-O: P_target 0.01 and 0.05).
    min_dcf_at = {f"{p:g}": round(compute_min_dcf(target, nontarget, p_target=p)[0], 4) for p in (0.01, 0.05)}
    plot_det({title: det_curve(target, nontarget)}, out / "det.png", eer_points={title: eer},
             title=f"{title}: DET curve ({len(trials)} trials)")
    _write_trial_scores(out / "trial_scores.txt", scores, trials)
    result = _verification_result(trials_path, trials, target, nontarget, p_target, eer, eer_threshold, min_dcf,
                                  dcf_threshold, min_dcf_at)
    if cohort is not None:
        from speechattn.metrics.score_norm import score_trials_asnorm

        _, normed = score_trials_asnorm(trials, embeddings, cohort.vectors, top_n=top_n,
                                        subtract_mean=cohort.mean if subtract_mean else None)
        result["asnorm"] = {**_other_scores(out / "trial_scores_asnorm.txt", normed, trials, labels, p_target),
                            "top_n": top_n, "subtract_mean": subtract_mean, "cohort_speakers": len(cohort.speakers),
                            "cohort_source": cohort.source}
    if plda is not None:
        llr = plda.score(np.stack([embeddings[t[1]] for t in trials]), np.stack([embeddings[t[2]] for t in trials]))
        result["plda"] = {**_other_scores(out / "trial_scores_plda.txt", llr, trials, labels, p_target),
                          "lda_dim": int(plda.lda.shape[1])}
        if plda_top_n > 0:
            from speechattn.metrics.score_norm import normalise_trial_scores

            normed = normalise_trial_scores(trials, embeddings, llr, plda.cohort_scores, plda_top_n)
            result["plda_asnorm"] = {**_other_scores(out / "trial_scores_plda_asnorm.txt", normed, trials, labels,
                                                     p_target),
                                     "top_n": plda_top_n, "cohort_recordings": int(len(plda.enrol_vectors))}
    return result


def _write_trial_scores(path: Path, scores: np.ndarray, trials: list) -> None:
    """``SCORE LABEL UTT1 UTT2`` per trial."""
    atomic_write_text(path, "".join(f"{s:.6f} {t[0]} {t[1]} {t[2]}\n" for s, t in zip(scores, trials)))


def _other_scores(path: Path, scores: np.ndarray, trials: list, labels: np.ndarray, p_target: float
                  ) -> dict[str, float]:
    """EER (%) and minDCF of another scoring of the same trials (AS-norm, PLDA), its scores written to ``path``."""
    from speechattn.metrics.verification import compute_eer, compute_min_dcf

    _write_trial_scores(path, scores, trials)
    eer, _ = compute_eer(scores[labels], scores[~labels])
    min_dcf, _ = compute_min_dcf(scores[labels], scores[~labels], p_target=p_target)
    return {"eer": round(100 * eer, 3), "min_dcf": round(min_dcf, 4)}


def _verification_result(trials_path: Path, trials: list, target: np.ndarray, nontarget: np.ndarray,
                         p_target: float, eer: float, eer_threshold: float, min_dcf: float,
                         dcf_threshold: float, min_dcf_at: dict[str, float]) -> dict[str, Any]:
    return {"trials": str(trials_path), "num_trials": len(trials), "num_target": int(target.size),
            "num_nontarget": int(nontarget.size), "eer": round(100 * eer, 3), "eer_threshold": round(eer_threshold, 4),
            "min_dcf": round(min_dcf, 4), "p_target": p_target, "min_dcf_threshold": round(dcf_threshold, 4),
            "min_dcf_at_p_target": min_dcf_at,
            "mean_target_score": round(float(target.mean()), 4),
            "mean_nontarget_score": round(float(nontarget.mean()), 4)}


def plot_speaker_embeddings(embeddings: dict[str, np.ndarray], utt2spk: dict[str, str], num_speakers: int,
                            method: str, out: Path, title: str) -> Path | None:
    """Embeddings of the first ``num_speakers`` reference speakers (sorted) that have at least two embedded
    utterances (a lone point per speaker shows nothing about clustering), one colour each."""
    from speechattn.plots.embeddings import plot_embeddings

    counts: dict[str, int] = {}
    for utt, spk in utt2spk.items():
        if utt in embeddings:
            counts[spk] = counts.get(spk, 0) + 1
    chosen = [spk for spk in sorted(counts) if counts[spk] >= 2][:num_speakers]
    utts = [u for u in sorted(utt2spk) if utt2spk[u] in chosen and u in embeddings]
    if len(utts) < 3:
        log.info("no embedding plot: fewer than 2 utterances per speaker in the reference (e.g. ident_test "
                 "holds one per speaker); the verification experiment's plot shows the clusters")
        return None
    if method == "tsne":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            log.warning("scikit-learn is not installed: PCA instead of t-SNE for the embedding plot")
            method = "pca"
    points = np.stack([embeddings[u] for u in utts])
    points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)  # cosine geometry
    return plot_embeddings(points, [utt2spk[u] for u in utts], out / "embeddings.png", method=method,
                           title=f"{title}: {len(chosen)} speakers, {len(utts)} utterances ({method.upper()})",
                           seed=0, num_threads=1)


def plda_speeds(option: Any, model_config: Any) -> list[float]:
    """Speed factors of PLDA's extra training copies: ``option`` as given (a list; ``None`` = none), or with
    ``"auto"`` the model's own training speeds when it trained each speed as a new speaker (docs/sid.md)."""
    if option == "auto":
        from speechattn.tasks.sid_augment import augment_config
        aug = augment_config(model_config)
        trained_as_speakers = aug.enabled and aug.speed.prob > 0 and aug.speed.as_new_speaker
        return [float(f) for f in aug.speed.factors] if trained_as_speakers else []
    if isinstance(option, str):
        raise ValueError(f"plda_speeds must be 'auto' or a list of speed factors, got '{option}'")
    return [float(f) for f in (option or [])]


def score_sid(cfg: DictConfig) -> dict[str, Any]:
    """Score one speaker experiment (see the module docstring); returns what ``scores.json`` holds."""
    exp_dir, ref_dir, hyp_dir, out = Path(cfg.exp_dir), Path(cfg.ref_dir), Path(cfg.hyp_dir), Path(cfg.output_dir)
    check_no_failures(hyp_dir, "embedded")
    utt2spk = read_table(ref_dir / "utt2spk")
    embeddings = read_embeddings(hyp_dir / "embeddings.scp")
    predictions_path = hyp_dir / "predictions.txt"
    predictions = ({u: v.split()[0] for u, v in read_table(predictions_path, check_sorted=False).items()}
                   if predictions_path.is_file() else None)
    embedder = SpeakerEmbedder.from_exp_dir(exp_dir, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    facts = _experiment_facts(exp_dir)
    facts["encoder"] = describe_encoder(embedder)
    name = exp_dir.name
    scores: dict[str, Any] = {**facts, "ref_dir": str(ref_dir), "hyp_dir": str(hyp_dir),
                              "score_kind": embedder.score_kind}

    from speechattn.tasks.sid_cohort import PLDA_DIR, cohort_for, embed_training_set, plda_for, training_set_of

    cache: dict[str, Any] = {}

    def training() -> Any:  # the training speakers' embeddings, computed once for the cohort, PLDA, enrolment
        if "embedded" not in cache:
            cache["embedded"] = embed_training_set(embedder, training_set_of(embedder))
        return cache["embedded"]

    def plda_backend(enrolled: bool = False) -> Any:
        given = cfg.get("plda_dir")
        return plda_for(embedder, exp_dir, Path(given) if given else None, int(cfg.get("plda_lda_dim", 100)),
                        training=training, speeds=plda_speeds(cfg.get("plda_speeds", None), embedder.config),
                        enrolled=enrolled)

    unseen = sorted(set(utt2spk.values()) - set(embedder.speakers))
    if not unseen:
        plda = None
        if cfg.get("plda", False):
            train_feats = training_set_of(embedder) / "feats.scp"
            stored = Path(cfg.plda_dir) if cfg.get("plda_dir") else exp_dir / PLDA_DIR
            if train_feats.is_file() or (stored / "plda.json").is_file():
                plda = plda_backend(enrolled=True)
            else:  # the head's scores need nothing more: score them, say what is missing
                log.warning("%s: no PLDA identification scores: the training speakers' features %s are missing "
                            "(run from the recipe's work dir)", name, train_feats)
        scores["identification"] = score_identification(embedder, embeddings, utt2spk, predictions, plda, out)
        ident = scores["identification"]
        log.info("%s: identification top-1 %.2f%%, top-5 %.2f%% (%d utterances, %d speakers)", name,
                 ident["top1"], ident["top5"], ident["num_utterances"], ident["num_speakers"])
        if "fused" in ident:
            log.info("%s: identification by LDA(%d) + PLDA: top-1 %.2f%%; head + PLDA fused: top-1 %.2f%%, "
                     "top-5 %.2f%%", name, ident["plda"]["lda_dim"], ident["plda"]["top1"], ident["fused"]["top1"],
                     ident["fused"]["top5"])
    else:
        log.info("%s: %d of %d reference speakers are not training speakers: no identification scores", name,
                 len(unseen), len(set(utt2spk.values())))
        scores["num_unseen_speakers"] = len(unseen)
    trials_path = Path(cfg.trials) if cfg.get("trials") else ref_dir / "trials"
    if trials_path.is_file():
        if not unseen:
            log.warning("%s: verification trials on speakers the model was trained on (not an open-set test)", name)
        cohort = plda = None
        if cfg.get("asnorm", False):
            given = cfg.get("asnorm_cohort")
            cohort = cohort_for(embedder, exp_dir, Path(given) if given else None, training=training)
        plda_top_n = int(cfg.get("plda_asnorm_top_n", 20)) if cfg.get("asnorm", False) else 0
        if cfg.get("plda", False):
            plda = plda_backend(enrolled=plda_top_n > 0)
        verif = score_verification(trials_path, embeddings, float(cfg.get("p_target", 0.01)), out, name, cohort,
                                   int(cfg.get("asnorm_top_n", 100)), bool(cfg.get("asnorm_subtract_mean", False)),
                                   plda, plda_top_n)
        scores["verification"] = verif
        log.info("%s: verification EER %.2f%%, minDCF(p_target=%g) %.4f over %d trials", name, verif["eer"],
                 verif["p_target"], verif["min_dcf"], verif["num_trials"])
        if "asnorm" in verif:
            log.info("%s: AS-norm (top %d of %d cohort speakers): EER %.2f%%, minDCF %.4f", name,
                     verif["asnorm"]["top_n"], verif["asnorm"]["cohort_speakers"], verif["asnorm"]["eer"],
                     verif["asnorm"]["min_dcf"])
        if "plda" in verif:
            log.info("%s: LDA(%d) + PLDA: EER %.2f%%, minDCF %.4f", name, verif["plda"]["lda_dim"],
                     verif["plda"]["eer"], verif["plda"]["min_dcf"])
        if "plda_asnorm" in verif:
            log.info("%s: LDA + PLDA, AS-norm (top %d of %d training recordings): EER %.2f%%, minDCF %.4f", name,
                     verif["plda_asnorm"]["top_n"], verif["plda_asnorm"]["cohort_recordings"],
                     verif["plda_asnorm"]["eer"], verif["plda_asnorm"]["min_dcf"])
    elif cfg.get("trials"):
        raise FileNotFoundError(f"{trials_path}: trials file not found")
    if "identification" not in scores and "verification" not in scores:
        raise ValueError(f"{ref_dir}: nothing to score: speakers unseen in training and no trials file")

    plot_speaker_embeddings(embeddings, utt2spk, int(cfg.get("embedding_plot_speakers", 20)),
                            str(cfg.get("embedding_plot_method", "tsne")), out, name)
    if (exp_dir / "training_curves.png").exists():
        shutil.copyfile(exp_dir / "training_curves.png", out / "training_curves.png")
    atomic_write_text(out / "scores.json", json.dumps(scores, indent=1, default=str) + "\n")
    log.info("%s -> %s", name, out / "scores.json")
    return scores

