"""Phone inference over a Kaldi data directory: ``frames.txt`` and ``phones.ctm``."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from speechattn.data.audio import AudioError, audio_info, load_audio
from speechattn.data.kaldi_dir import KaldiDataDir
from speechattn.inference.longform import runs_to_ctm
from speechattn.inference.phone import PhoneLabeler
from speechattn.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)


def infer_phone_dir(exp_dir: Path, data_dir: Path, out_dir: Path, *, checkpoint: str = "model.pt",
                    allow_pipes: bool = False, device: torch.device = torch.device("cpu"),
                    chunk_frames: int = 6000, force: bool = False, precision: str | None = None) -> Path:
    """Label every utterance of ``data_dir/wav.scp``; returns ``out_dir/frames.txt``."""
    frames_path, ctm_path = out_dir / "frames.txt", out_dir / "phones.ctm"
    data = KaldiDataDir.load(data_dir, require=("wav.scp",))
    if not force and frames_path.exists() and ctm_path.exists():
        done = sum(1 for _ in frames_path.open()) + _count_failed(out_dir)
        if done == len(data.wav_scp):
            log.info("%s is complete (%d utterances): skipping (force=true to redo)", frames_path, done)
            return frames_path
    labeler = PhoneLabeler.from_exp_dir(exp_dir, checkpoint, device, data_dir, precision=precision)
    sample_rate = labeler.feature_cfg.sample_rate
    failed: list[str] = []
    scp = data_dir / "wav.scp"
    n_frames = 0
    with atomic_open(frames_path) as frames_f, atomic_open(ctm_path) as ctm_f:
        for lineno, (utt, spec) in enumerate(tqdm(data.wav_scp.items(), desc="infer", mininterval=5.0), start=1):
            where = f"{scp}:{lineno}"
            try:
                labels = _label_utterance(labeler, spec, utt, where, sample_rate, allow_pipes, chunk_frames)
            except AudioError as e:
                log.warning("skipping %s: %s", utt, e)
                failed.append(f"{utt} {e}")
                continue
            frames_f.write(utt + " " + " ".join(labels) + "\n")
            ctm_f.writelines(line + "\n" for line in runs_to_ctm(utt, labels))
            n_frames += len(labels)
    atomic_write_text(out_dir / "failed.txt", "".join(f + "\n" for f in failed))
    log.info("labelled %d utterances (%d frames) -> %s; %d skipped%s", len(data.wav_scp) - len(failed), n_frames,
             frames_path, len(failed), f" (listed in {out_dir / 'failed.txt'})" if failed else "")
    return frames_path


def _label_utterance(labeler: PhoneLabeler, spec: str, utt: str, where: str, sample_rate: int,
                     allow_pipes: bool, chunk_frames: int) -> list[str]:
    is_file = not spec.rstrip().endswith("|")
    if is_file and labeler.receptive_field is not None:
        num_samples = audio_info(spec, sample_rate, allow_pipes=allow_pipes, where=where)[0]
        if num_samples > chunk_frames * 160:  # long recording: bounded memory, identical labels
            labels: list[str] = []
            for _, chunk in labeler.iter_label_file(spec, chunk_frames):
                labels.extend(chunk)
            return labels
    waveform = load_audio(spec, sample_rate, allow_pipes=allow_pipes, where=where)
    return labeler.label_waveform(waveform, utt)


def _count_failed(out_dir: Path) -> int:
    path = out_dir / "failed.txt"
    return sum(1 for _ in path.open()) if path.exists() else 0
