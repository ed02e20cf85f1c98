"""speechattn-compute-features: Kaldi-compatible features of a data dir (stage 1), like ``steps/make_fbank.sh``.

    speechattn-compute-features data_dir=data/train nj=4                 # all 4 jobs here, 4 processes
    speechattn-compute-features data_dir=data/train features=mfcc
    speechattn-compute-features -m data_dir=data/train nj=8 job=1,2,3,4,5,6,7,8 hydra/launcher=...

The data dir is split into ``nj`` jobs (``data_dir/split{nj}/{job}``). Each job reads its ``wav.scp`` (and
``segments``), computes features and writes ``feats_dir/raw_{kind}.{job}.ark`` + ``.scp``; the ark is written
under a temporary name and renamed, and a job counts as done only when its ``.done.json`` marker exists (a
done job is skipped on re-run). When all jobs are done their scp files are merged into ``data_dir/feats.scp``
(sorted), and ``data_dir/feat_dim`` and ``data_dir/feats.yaml`` (the feature config, so training/inference
can compute identical features for new audio) are written. Unreadable audio is skipped, counted in the log
and listed in ``data_dir/feats_failed.txt``; a frame count differing from ``data_dir/utt2num_frames`` is an
error. Everything is skipped when ``feats.scp`` is complete, newer than ``wav.scp`` and made with the same
feature config (``force=true`` recomputes).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors, setup_logging

log = logging.getLogger("speechattn.compute_features")

FAILED_LIST = "feats_failed.txt"
# Data-dir tables that decide a feature matrix: features older than any of them are stale.
AUDIO_INPUTS = ("wav.scp", "segments", "utt2speed")


@dataclass
class JobResult:
    """Outcome of one job: utterances written and ``(utt, reason)`` of those skipped."""

    job: int
    num_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: bool = False  # already complete from an earlier run


def job_paths(feats_dir: Path, kind: str, job: int) -> tuple[Path, Path, Path]:
    """``(ark, scp, done marker)`` of a job."""
    stem = f"raw_{kind}.{job}"
    return feats_dir / f"{stem}.ark", feats_dir / f"{stem}.scp", feats_dir / f"{stem}.done.json"


def _job_is_done(job_dir: Path, feats_dir: Path, feature_cfg: dict[str, Any], job: int, nj: int) -> bool:
    ark, scp, done = job_paths(feats_dir, feature_cfg["kind"], job)
    if not (done.is_file() and scp.is_file() and ark.is_file()):
        return False
    try:
        marker = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    newest_input = max((job_dir / name).stat().st_mtime_ns for name in AUDIO_INPUTS
                       if (job_dir / name).is_file())
    return marker.get("config") == feature_cfg and marker.get("nj") == nj and done.stat().st_mtime_ns >= newest_input


def run_job(job_dir: str | os.PathLike, feats_dir: str | os.PathLike, job: int, nj: int,
            feature_cfg: dict[str, Any], allow_pipes: bool = False, progress: bool = True) -> JobResult:
    """Compute the features of one split job; writes its ark, scp and done marker (in that order)."""
    import kaldiio
    from tqdm import tqdm

    from speechattn.data.audio import AudioError, load_audio
    from speechattn.data.kaldi_dir import KaldiDataDir, KaldiDataError
    from speechattn.data.segments import SegmentReader
    from speechattn.data.speed_perturb import apply_speed
    from speechattn.features.extract import FeatureConfig, compute_features
    from speechattn.utils.atomic import atomic_write_text

    job_dir, feats_dir = Path(job_dir), Path(feats_dir).resolve()
    cfg = FeatureConfig.from_config(feature_cfg)
    ark_path, scp_path, done_path = job_paths(feats_dir, cfg.kind, job)
    if _job_is_done(job_dir, feats_dir, feature_cfg, job, nj):
        marker = json.loads(done_path.read_text())
        return JobResult(job, marker["num_done"], [tuple(x) for x in marker["failed"]], skipped=True)

    data = KaldiDataDir.load(job_dir)
    wav_lines = {key: i for i, key in enumerate(data.wav_scp, start=1)}
    expected_frames = data.utt2num_frames or {}
    frame_lines = {key: i for i, key in enumerate(expected_frames, start=1)}
    result = JobResult(job)
    scp_lines: list[str] = []
    feats_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = ark_path.with_name(f".{ark_path.name}.{os.getpid()}.tmp")
    segment_audio = (SegmentReader(data, cfg.sample_rate, allow_pipes=allow_pipes, where_dir=job_dir)
                     if data.segments is not None else None)
    try:
        with open(tmp_path, "wb") as ark:
            for utt in tqdm(data.utterances, desc=f"{cfg.kind} job {job}/{nj}", position=job - 1,
                            disable=not progress, leave=False, mininterval=1.0):
                try:
                    if data.segments is None:
                        where = f"{job_dir / 'wav.scp'}:{wav_lines[utt]}"
                        waveform = load_audio(data.wav_scp[utt], cfg.sample_rate, allow_pipes=allow_pipes,
                                              where=where)
                    else:
                        waveform = segment_audio(utt)
                    if data.utt2speed is not None and utt in data.utt2speed:
                        waveform = apply_speed(waveform, cfg.sample_rate, data.utt2speed[utt])
                    feats = compute_features(waveform, cfg.sample_rate, cfg)
                    if feats.shape[0] == 0:
                        raise AudioError(f"{utt}: shorter than one analysis window ({waveform.numel()} samples)")
                except AudioError as e:
                    reason = " ".join(str(e).split())
                    log.warning("skipping utterance '%s': %s", utt, reason)
                    result.failed.append((utt, reason))
                    continue
                if utt in expected_frames and expected_frames[utt] != feats.shape[0]:
                    raise KaldiDataError(
                        f"{job_dir / 'utt2num_frames'}:{frame_lines[utt]}: utterance '{utt}' has "
                        f"{feats.shape[0]} feature frames but utt2num_frames says {expected_frames[utt]}")
                position = ark.tell() + len(utt.encode("utf-8")) + 1  # the matrix starts after "UTT "
                kaldiio.save_ark(ark, {utt: feats.numpy()})
                scp_lines.append(f"{utt} {ark_path}:{position}\n")
                result.num_done += 1
            ark.flush()
            os.fsync(ark.fileno())
        os.replace(tmp_path, ark_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    atomic_write_text(scp_path, "".join(scp_lines))
    atomic_write_text(done_path, json.dumps(
        {"config": feature_cfg, "nj": nj, "num_done": result.num_done, "failed": result.failed}, indent=1))
    return result


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one job per core, as Kaldi's run.pl
    setup_logging()


def feats_are_up_to_date(data_dir: Path, feature_cfg: dict[str, Any]) -> bool:
    """``feats.scp`` covers every utterance (or lists it as failed), is newer than ``wav.scp``/``segments``/
    ``utt2speed`` and was made with ``feature_cfg``."""
    from speechattn.data.kaldi_dir import KaldiDataDir, KaldiDataError, read_table

    feats_scp, feats_yaml = data_dir / "feats.scp", data_dir / "feats.yaml"
    if not (feats_scp.is_file() and feats_yaml.is_file()):
        return False
    newest_input = max((data_dir / name).stat().st_mtime_ns for name in AUDIO_INPUTS
                       if (data_dir / name).is_file())
    if feats_scp.stat().st_mtime_ns < newest_input:
        return False
    if OmegaConf.to_container(OmegaConf.load(feats_yaml)) != feature_cfg:
        return False
    try:
        done = set(read_table(feats_scp))
        failed_path = data_dir / FAILED_LIST
        failed = set(read_table(failed_path, min_fields=1)) if failed_path.is_file() else set()
        return done | failed == set(KaldiDataDir.load(data_dir).utterances)
    except KaldiDataError:
        return False


def merge_jobs(data_dir: Path, feats_dir: Path, feature_cfg: dict[str, Any], nj: int) -> tuple[int, int]:
    """Merge the job scp files into ``data_dir/feats.scp``; write ``feat_dim``, ``feats.yaml`` and the failed
    list. ``feats.scp`` is written last: its presence means the stage completed. Returns (done, failed)."""
    from speechattn.data.kaldi_dir import KaldiDataDir, KaldiDataError, read_table, write_table
    from speechattn.features.extract import FeatureConfig, feature_dim
    from speechattn.utils.atomic import atomic_write_text

    feats: dict[str, str] = {}
    failed: dict[str, str] = {}
    for job in range(1, nj + 1):
        _, scp_path, done_path = job_paths(feats_dir, feature_cfg["kind"], job)
        feats.update(read_table(scp_path, check_sorted=False) if scp_path.stat().st_size else {})
        failed.update({utt: reason for utt, reason in json.loads(done_path.read_text())["failed"]})
    utterances = set(KaldiDataDir.load(data_dir).utterances)
    missing = utterances - set(feats) - set(failed)
    if missing:
        raise KaldiDataError(f"{data_dir}:0: {len(missing)} utterance(s) have no features after all jobs, "
                             f"e.g. '{sorted(missing)[0]}' (stale split? re-run with force=true)")
    if not feats:
        raise KaldiDataError(f"{data_dir / 'wav.scp'}:0: no utterance could be processed; see {FAILED_LIST}")
    cfg = FeatureConfig.from_config(feature_cfg)
    atomic_write_text(data_dir / "feats.yaml", OmegaConf.to_yaml(OmegaConf.create(feature_cfg)))
    atomic_write_text(data_dir / "feat_dim", f"{feature_dim(cfg)}\n")
    if failed:
        write_table(data_dir / FAILED_LIST, failed)
    else:
        (data_dir / FAILED_LIST).unlink(missing_ok=True)
    write_table(data_dir / "feats.scp", {utt: feats[utt] for utt in feats if utt in utterances})
    return len(feats), len(failed)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage as configured (see the module docstring); returns a summary for logs and tests."""
    from speechattn.data.kaldi_dir import KaldiDataError, split_data_dir
    from speechattn.features.extract import FeatureConfig

    data_dir = Path(cfg.data_dir)
    feats_dir = Path(cfg.feats_dir).resolve()
    nj = int(cfg.nj)
    feature_cfg = FeatureConfig.from_config(cfg.features).to_dict()  # validated, every field explicit
    if not cfg.force and feats_are_up_to_date(data_dir, feature_cfg):
        log.info("%s/feats.scp is up to date (force=true to recompute): skipping", data_dir)
        return {"skipped": True}
    job_dirs = split_data_dir(data_dir, nj)
    jobs = list(range(1, nj + 1)) if cfg.job is None else [int(cfg.job)]
    for job in jobs:
        if not 1 <= job <= nj:
            raise KaldiDataError(f"{data_dir}:0: job={job} outside 1..nj={nj}")
    if cfg.force:
        for job in jobs:
            job_paths(feats_dir, feature_cfg["kind"], job)[2].unlink(missing_ok=True)

    arguments = [(job_dirs[job - 1], feats_dir, job, nj, feature_cfg, bool(cfg.allow_pipes), bool(cfg.progress))
                 for job in jobs]
    workers = max(1, min(int(cfg.workers), len(jobs)))
    if workers == 1:
        results = [run_job(*args) for args in arguments]
    else:
        # forkserver: torch is imported once in the server, workers are forked from it (cheap) and never
        # inherit the threads of a process that already ran torch ops (fork from the parent could deadlock).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "speechattn.features.extract", __name__])
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
            results = [future.result() for future in [pool.submit(run_job, *args) for args in arguments]]
    for r in results:
        state = "already done" if r.skipped else "done"
        log.info("job %d/%d %s: %d utterances, %d skipped (bad audio)", r.job, nj, state, r.num_done, len(r.failed))

    pending = [job for job in range(1, nj + 1)
               if not _job_is_done(job_dirs[job - 1], feats_dir, feature_cfg, job, nj)]
    if pending:
        log.info("jobs %s not done yet: feats.scp will be merged by the last job to finish", pending)
        return {"skipped": False, "merged": False, "pending": pending}
    num_done, num_failed = merge_jobs(data_dir, feats_dir, feature_cfg, nj)
    if num_failed:
        log.warning("%d utterance(s) skipped for bad audio, listed in %s", num_failed, data_dir / FAILED_LIST)
    log.info("wrote %s (%d utterances, %s features)", data_dir / "feats.scp", num_done, feature_cfg["kind"])
    return {"skipped": False, "merged": True, "num_done": num_done, "num_failed": num_failed}


@one_line_errors
@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="compute_features")
def main(cfg: DictConfig) -> None:
    with input_errors_as_one_line():
        run(cfg)


if __name__ == "__main__":
    main()
