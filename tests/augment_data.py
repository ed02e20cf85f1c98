"""Small augmentation corpora for tests, written in the real layouts (MUSAN, RIRS_NOISES) and a tiny
speaker data dir whose recordings have pauses (for babble and non-speech noise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from speechattn.data.kaldi_dir import utt2spk_to_spk2utt, write_table


def noise(rng: np.random.Generator, seconds: float, sr: int = 16000, level: float = 0.1) -> np.ndarray:
    return (level * rng.standard_normal(int(seconds * sr))).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, rt60: float = 0.3, sr: int = 16000, delay: int = 40) -> np.ndarray:
    """Exponentially decaying noise after a direct path at ``delay`` samples (energy -60 dB at rt60)."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
    rir = np.zeros(delay + n, dtype=np.float32)
    rir[delay] = 1.0
    rir[delay + 1:] += tail[: n - 1].astype(np.float32)
    return rir


def make_musan(root: Path, per_part: int = 2, seconds: float = 1.0, sr: int = 16000, seed: int = 0,
               vocals: tuple[str, ...] = ("Y", "N")) -> Path:
    """``root/musan/{music/fma, noise/free-sound, speech/librivox}`` with ``per_part`` wavs + ANNOTATIONS
    (music: ``UTT GENRES VOCALS ARTIST``; vocals cycle through ``vocals``)."""
    rng = np.random.default_rng(seed)
    musan = root / "musan"
    for part, collection in (("music", "fma"), ("noise", "free-sound"), ("speech", "librivox")):
        d = musan / part / collection
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_part):
            utt = f"{part}-{collection}-{i:04d}"
            sf.write(d / f"{utt}.wav", noise(rng, seconds, sr), sr)
            if part == "music":
                lines.append(f"{utt} Classical,Jazz {vocals[i % len(vocals)]} Some_Artist\n")
            elif part == "speech":
                lines.append(f"{utt} male english\n")
            else:
                lines.append(f"{utt} http://example.org/{utt}\n")
        (d / "ANNOTATIONS").write_text("".join(lines))
    (musan / "README").write_text("MUSAN test fixture\n")
    return musan


def make_rirs_noises(root: Path, rooms: tuple[str, ...] = ("smallroom", "mediumroom"), per_room: int = 2,
                     sr: int = 16000, seed: int = 0, name: str = "RIRS_NOISES") -> Path:
    """``root/<name>`` in the openslr-28 layout; list files name their wavs ``RIRS_NOISES/...`` as the real
    ones do (relative to the corpus's parent), whatever ``name`` the directory was given."""
    rng = np.random.default_rng(seed)
    base = root / name
    for room in rooms:
        lines = []
        for r in range(1, 3):
            room_dir = base / "simulated_rirs" / room / f"Room{r:03d}"
            room_dir.mkdir(parents=True, exist_ok=True)
            for k in range(1, per_room + 1):
                wav = room_dir / f"Room{r:03d}-{k:05d}.wav"
                sf.write(wav, synthetic_rir(rng, 0.2 + 0.1 * r), sr)
                lines.append(f"--rir-id {room}-Room{r:03d}-{k:05d} --room-id {room}-Room{r:03d} "
                             f"RIRS_NOISES/simulated_rirs/{room}/Room{r:03d}/Room{r:03d}-{k:05d}.wav\n")
        (base / "simulated_rirs" / room / "rir_list").write_text("".join(lines))
    real = base / "real_rirs_isotropic_noises"
    real.mkdir(parents=True, exist_ok=True)
    sf.write(real / "RVB2014_type1_rir_largeroom1_near_angla.wav",
             np.stack([synthetic_rir(rng, 0.5), synthetic_rir(rng, 0.5)], axis=1), sr)  # 2 channels
    sf.write(real / "RVB2014_type1_noise_largeroom1_1.wav", noise(rng, 1.0, sr), sr)
    (real / "rir_list").write_text(
        "--rir-id RVB2014_type1_rir_largeroom1_near_angla --room-id RVB2014_type1_rir_largeroom1 "
        "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav\n")
    (real / "noise_list").write_text(
        "--noise-id RVB2014_type1_noise_largeroom1_1 --noise-type isotropic --bg-fg-type background "
        "--rir-id RVB2014_type1_rir_largeroom1_near_angla "
        "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav\n")
    point = base / "pointsource_noises"
    point.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(2):
        sf.write(point / f"noise-free-sound-{i:04d}.wav", noise(rng, 0.5, sr), sr)
        lines.append(f"--noise-id noise-free-sound-{i:04d} --noise-type point-source --bg-fg-type foreground "
                     f"RIRS_NOISES/pointsource_noises/noise-free-sound-{i:04d}.wav\n")
    (point / "noise_list").write_text("".join(lines))
    return base


def speech_with_pauses(rng: np.random.Generator, f0: float, sr: int = 16000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """0.5 s of low noise, 1 s 'speech' (harmonics of f0), 0.5 s noise, 1 s speech, 0.5 s noise; returns
    the audio and the pause intervals in seconds."""
    pieces, pauses, t = [], [], 0.0
    for kind, dur in (("pause", 0.5), ("speech", 1.0), ("pause", 0.5), ("speech", 1.0), ("pause", 0.5)):
        n = int(dur * sr)
        if kind == "pause":
            pieces.append(0.003 * rng.standard_normal(n))
            pauses.append((t, t + dur))
        else:
            tt = np.arange(n) / sr
            pieces.append(sum(0.2 / h * np.sin(2 * np.pi * f0 * h * tt) for h in range(1, 6)) + 0.003 * rng.standard_normal(n))
        t += dur
    return np.concatenate(pieces).astype(np.float32), pauses


def make_speaker_dir(root: Path, speakers: int = 3, per_speaker: int = 2, seed: int = 0) -> tuple[Path, str]:
    """A Kaldi data dir (wav.scp, utt2spk, spk2utt) of ``speakers`` x ``per_speaker`` recordings with
    pauses, and a CTM whose SIL segments are the pauses. Returns (data dir, ctm path)."""
    rng = np.random.default_rng(seed)
    d = root / "train"
    (root / "wav").mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk, ctm = {}, {}, []
    for s in range(speakers):
        for k in range(per_speaker):
            spk, utt = f"spk{s}", f"spk{s}-utt{k}"
            audio, pauses = speech_with_pauses(rng, 120.0 + 60 * s)
            path = root / "wav" / f"{utt}.flac"
            sf.write(path, audio, 16000)
            wav_scp[utt], utt2spk[utt] = str(path), spk
            end_prev = 0.0
            for start, end in pauses:
                if start > end_prev:
                    ctm.append(f"{utt} 1 {end_prev:.2f} {start - end_prev:.2f} AA\n")
                ctm.append(f"{utt} 1 {start:.2f} {end - start:.2f} SIL\n")
                end_prev = end
    write_table(d / "wav.scp", wav_scp)
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    (root / "phones.ctm").write_text("".join(ctm))
    return d, str(root / "phones.ctm")
