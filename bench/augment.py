"""Cost of waveform augmentation per training crop on CPU (speechattn/data/augment), to check that it is
not the bottleneck of an epoch.

Audio: the first ``--utts`` utterances of speechocean762 ``train/`` from ``../shared`` (with their CTM
pauses for non-speech noise), or synthetic speech with pauses when the corpus is absent. Each run draws
``--crops`` crops of 2-3 s (uniform, as the speaker recipe's training crops) at random positions and
applies one configuration; a crop costs its augmentation, plus, for reference, the 80-dim fbank that an
on-the-fly pipeline computes afterwards anyway (``speechattn.features.extract.compute_features``).
Reverberation uses a synthetic RIR set (``local/make_rir_set.py`` layout, made in a temporary directory
unless ``--rir-dir``), MUSAN a generated stand-in in MUSAN's layout (30 s files; unless ``--musan-dir``).
Time is process CPU time on one thread (robust to other jobs on a shared machine); "s/epoch" scales the
per-crop cost to ``--epoch-crops`` crops (2,000 = speechocean762 ident_train, one crop per utterance).

    .venv/bin/python bench/augment.py                   # ~1 min
    .venv/bin/python bench/augment.py --crops 100 --utts 50
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechattn.data.alignments import read_ctm  # noqa: E402
from speechattn.data.audio import load_audio  # noqa: E402
from speechattn.data.augment.nonspeech import nonspeech_from_alignments  # noqa: E402
from speechattn.data.augment.pipeline import AugmentConfig, WaveAugmenter, build_nonspeech_pool  # noqa: E402
from speechattn.data.augment.rir import DEFAULT_ROOM_CLASSES, RirSetParams, generate_rir_set  # noqa: E402
from speechattn.data.augment.sources import SegmentPool, SpeechBank  # noqa: E402
from speechattn.features.extract import FeatureConfig, compute_features  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "speechocean762"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpora/speechocean762")

CONFIGS = {
    "none (crop only)": {"enabled": False},
    "speed 0.9/1.1": {"speed": {"prob": 1.0}},
    "reverb": {"reverb": {"prob": 1.0}},
    "nonspeech noise": {"nonspeech": {"prob": 1.0}},
    "babble (3-7 talkers)": {"babble": {"prob": 1.0}},
    "MUSAN noise": {"musan_noise": {"prob": 1.0}},
    "MUSAN music": {"musan_music": {"prob": 1.0}},
    "MUSAN speech (3-7)": {"musan_speech": {"prob": 1.0}},
    "conf/augment/speaker.yaml mix": {"speed": {"prob": 0.667}, "reverb": {"prob": 0.2}, "nonspeech": {"prob": 0.2},
                                      "babble": {"prob": 0.2}},
}


def load_bank(num_utts: int) -> tuple[SpeechBank, dict[str, list[tuple[int, int]]], str]:
    wav_scp = CORPUS / "train" / "wav.scp"
    if wav_scp.is_file():
        entries = [line.split() for line in wav_scp.read_text().splitlines()[:num_utts]]
        utt2spk = dict(line.split() for line in (CORPUS / "train" / "utt2spk").read_text().splitlines())
        audio = [load_audio(str(CORPUS / path)) for _, path in entries]
        bank = SpeechBank([u for u, _ in entries], [utt2spk[u] for u, _ in entries], audio)
        ctm = read_ctm(CORPUS / "alignments" / "phones.ctm")
        ranges = {u: nonspeech_from_alignments(ctm[u], a.numel()) for (u, _), a in zip(entries, audio) if u in ctm}
        return bank, ranges, f"speechocean762 train/, first {len(entries)} utterances"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from augment_data import speech_with_pauses

    rng = np.random.default_rng(0)
    utts, spks, audio, ranges = [], [], [], {}
    for i in range(num_utts):
        wave, pauses = speech_with_pauses(rng, 100.0 + 7 * (i % 20))
        utts.append(f"u{i}")
        spks.append(f"s{i % 20}")
        audio.append(torch.from_numpy(wave))
        ranges[f"u{i}"] = [(int(a * 16000) + 480, int(b * 16000) - 480) for a, b in pauses]
    return SpeechBank(utts, spks, audio), ranges, f"synthetic ({CORPUS} absent), {num_utts} utterances"


def fake_musan(root: Path, seconds: float = 30.0) -> Path:
    rng = np.random.default_rng(0)
    for part in ("music", "noise", "speech"):
        d = root / "musan" / part / "bench"
        d.mkdir(parents=True)
        for i in range(4):
            sf.write(d / f"{part}-bench-{i:04d}.wav", (0.05 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        (d / "ANNOTATIONS").write_text("".join(f"{part}-bench-{i:04d} Jazz N A\n" for i in range(4)))
    return root / "musan"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=200, help="recordings in the speech bank (default: %(default)s)")
    parser.add_argument("--crops", type=int, default=300, help="crops timed per configuration (default: %(default)s)")
    parser.add_argument("--epoch-crops", type=int, default=2000, help="crops per epoch for the s/epoch column")
    parser.add_argument("--rir-dir", type=Path, default=None, help="RIRS_NOISES-layout dir (default: a generated set)")
    parser.add_argument("--musan-dir", type=Path, default=None, help="MUSAN dir (default: a generated stand-in)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    bank, ranges, source = load_bank(args.utts)
    pool = SegmentPool(bank, ranges)
    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    t0 = time.process_time()
    rir_dir = args.rir_dir
    if rir_dir is None:
        rir_dir = tmp / "rirs"
        generate_rir_set(rir_dir, RirSetParams(classes=tuple(dataclasses.replace(c, num_rooms=4) for c in DEFAULT_ROOM_CLASSES)))
    rir_seconds = time.process_time() - t0
    musan_dir = args.musan_dir or fake_musan(tmp)
    fbank = FeatureConfig()
    rng = np.random.default_rng(0)
    crops = []
    for k in range(args.crops):
        i = int(rng.integers(len(bank)))
        n = bank.audio[i].size
        length = min(n, int(rng.integers(32000, 48001)))
        start = int(rng.integers(n - length + 1))
        crops.append((k, i, start, length))

    print(f"# bench/augment.py: {source}; {args.crops} crops of 2-3 s; 1 thread; {platform.processor() or platform.machine()}")
    print(f"# RIR set: {'given' if args.rir_dir else f'generated, 60 RIRs in {rir_seconds:.1f} CPU-s'}; "
          f"MUSAN: {'given' if args.musan_dir else 'generated stand-in'}; non-speech pool: {len(pool)} CTM pauses")
    print()
    print("| augmentation | crops/s | ms/crop | + fbank ms/crop | s/epoch (augmentation) |")
    print("|---|---:|---:|---:|---:|")
    for name, cfg in CONFIGS.items():
        full = {**cfg, "musan_dir": str(musan_dir), "reverb": {**cfg.get("reverb", {}), "rir_dir": str(rir_dir)}}
        aug = WaveAugmenter(AugmentConfig.from_dict(full), seed=1, bank=bank, nonspeech=pool)
        t_aug = t_feat = 0.0
        for k, i, start, length in crops:
            crop = bank.waveform(i, start, start + length)
            t = time.process_time()
            out = aug(crop, 0, k, bank.speakers[i])
            t_aug += time.process_time() - t
            t = time.process_time()
            compute_features(out.waveform, 16000, fbank)
            t_feat += time.process_time() - t
        per_crop = t_aug / len(crops)
        print(f"| {name} | {1 / max(per_crop, 1e-9):,.0f} | {1000 * per_crop:.2f} | {1000 * t_feat / len(crops):.2f} | "
              f"{per_crop * args.epoch_crops:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
