"""Speaker inference over a Kaldi data directory: ``predictions.txt`` and ``embeddings.scp``/``.ark``.

Outputs of ``infer_sid_dir(exp_dir, data_dir, out_dir)`` (only ``data_dir/wav.scp`` is needed):

- ``out_dir/embeddings.ark`` + ``embeddings.scp``: one speaker embedding (Kaldi float vector, kaldiio) per
  utterance, computed on the whole utterance;
- ``out_dir/predictions.txt``: ``UTT SPEAKER SCORE``, the top-1 training speaker and its score (cosine
  with the AAM-softmax class vector; softmax posterior for a plain softmax head). The speaker is *always*
  one of the training speakers, also for a speaker the model has never heard: read the score as the
  confidence, and use the embeddings (cosine between utterances) for open-set decisions;
- ``out_dir/failed.txt``: ``UTT REASON`` for every utterance skipped because its audio is missing,
  unreadable, empty or shorter than one 25 ms window (empty file when none; the count is logged).

Every file is written under a temporary name and renamed when complete, ``predictions.txt`` last, so an
interrupted run never leaves outputs that look complete; complete outputs (newer than the model and
``wav.scp``, covering every utterance) are skipped unless ``force``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import kaldiio
import torch
from tqdm import tqdm

from speechattn.data.audio import AudioError, load_audio
from speechattn.data.kaldi_dir import KaldiDataDir, read_table
from speechattn.inference.sid import SpeakerEmbedder
from speechattn.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.txt"
EMBEDDINGS_ARK = "embeddings.ark"
EMBEDDINGS_SCP = "embeddings.scp"
FAILED = "failed.txt"


def outputs_complete(exp_dir: Path, data_dir: Path, out_dir: Path, checkpoint: str = "model.pt") -> bool:
    """True when ``out_dir`` holds predictions + embeddings for every utterance of ``data_dir/wav.scp``
    (or a failed.txt line), newer than the model and the wav.scp."""
    paths = [out_dir / name for name in (PREDICTIONS, EMBEDDINGS_SCP, EMBEDDINGS_ARK, FAILED)]
    if not all(p.is_file() for p in paths):
        return False
    oldest_output = min(p.stat().st_mtime_ns for p in paths)
    inputs = [exp_dir / checkpoint, data_dir / "wav.scp"]
    if any(p.is_file() and p.stat().st_mtime_ns > oldest_output for p in inputs):
        return False
    wav_utts = set(read_table(data_dir / "wav.scp"))
    done = set(read_table(out_dir / PREDICTIONS, check_sorted=False)) if paths[0].stat().st_size else set()
    failed = set(read_table(out_dir / FAILED, check_sorted=False, min_fields=1)) if paths[3].stat().st_size else set()
    embedded = set(read_table(out_dir / EMBEDDINGS_SCP, check_sorted=False)) if paths[1].stat().st_size else set()
    return done == embedded and done | failed == wav_utts


def infer_sid_dir(exp_dir: Path, data_dir: Path, out_dir: Path, *, checkpoint: str = "model.pt",
                  allow_pipes: bool = False, device: torch.device = torch.device("cpu"),
                  force: bool = False) -> Path:
    """Embed and identify every utterance of ``data_dir/wav.scp``; returns ``out_dir/predictions.txt``."""
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    predictions_path = out_dir / PREDICTIONS
    data = KaldiDataDir.load(data_dir, require=("wav.scp",))
    if data.segments is not None:
        log.warning("%s has a segments file: it is ignored, each wav.scp recording is one utterance", data_dir)
    if not force and outputs_complete(exp_dir, data_dir, out_dir, checkpoint):
        log.info("%s is complete (%d utterances): skipping (force=true to redo)", predictions_path,
                 len(data.wav_scp))
        return predictions_path
    embedder = SpeakerEmbedder.from_exp_dir(exp_dir, checkpoint, device, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path.unlink(missing_ok=True)  # outputs of an earlier run must not pass for this run's
    ark_path = (out_dir / EMBEDDINGS_ARK).resolve()  # absolute: the scp works from any directory
    scp = data_dir / "wav.scp"
    predictions: list[str] = []
    scp_lines: list[str] = []
    failed: list[str] = []
    frames = 0
    t0 = time.monotonic()
    with atomic_open(ark_path, "wb") as ark:
        for lineno, (utt, spec) in enumerate(tqdm(data.wav_scp.items(), desc="infer", mininterval=5.0), start=1):
            try:
                waveform = load_audio(spec, embedder.sample_rate, allow_pipes=allow_pipes, where=f"{scp}:{lineno}")
            except AudioError as e:
                log.warning("skipping %s: %s", utt, e)
                failed.append(f"{utt} {' '.join(str(e).split())}")
                continue
            feats = embedder.features(waveform, utt)
            embedding = embedder.embed(feats)
            speaker, score = embedder.predict(embedding)
            position = ark.tell() + len(utt.encode("utf-8")) + 1  # the vector starts after "UTT "
            kaldiio.save_ark(ark, {utt: embedding.numpy()})
            scp_lines.append(f"{utt} {ark_path}:{position}\n")
            predictions.append(f"{utt} {speaker} {score:.4f}\n")
            frames += feats.shape[0]
    atomic_write_text(out_dir / EMBEDDINGS_SCP, "".join(scp_lines))
    atomic_write_text(out_dir / FAILED, "".join(f + "\n" for f in failed))
    atomic_write_text(predictions_path, "".join(predictions))  # last: its presence marks completion
    seconds = time.monotonic() - t0
    log.info("embedded %d utterances (%d frames, %.0f frames/s) -> %s; %d skipped%s", len(predictions), frames,
             frames / max(seconds, 1e-9), predictions_path, len(failed),
             f" (listed in {out_dir / FAILED})" if failed else "")
    return predictions_path
