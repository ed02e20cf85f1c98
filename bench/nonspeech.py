"""How well the energy detector finds non-speech, against speechocean762's phone alignments, and how much
non-speech FSDD's trimmed digits offer (speechattn/data/augment/nonspeech.py).

For the first ``--utts`` recordings of speechocean762 ``train/`` with an alignment: the seconds of
non-speech found by each method (SIL segments shrunk by 30 ms, ranges >= ``--min-duration`` s), the share
of the energy detector's samples that fall inside aligned SIL regions and inside aligned phones
(speech leaking into the noise pool), and its recall of the alignment's non-speech. For FSDD
(every ``--fsdd-every``-th recording): the non-speech the detector finds at 0.2 s and 0.1 s minimum.

    .venv/bin/python bench/nonspeech.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechattn.data.alignments import SILENCE, read_ctm  # noqa: E402
from speechattn.data.audio import load_audio  # noqa: E402
from speechattn.data.augment.nonspeech import nonspeech_from_alignments, nonspeech_from_energy  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/corpora")


def mask(ranges: list[tuple[int, int]], n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for start, end in ranges:
        m[start:end] = True
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=300)
    parser.add_argument("--min-duration", type=float, default=0.2)
    parser.add_argument("--fsdd-every", type=int, default=10)
    args = parser.parse_args(argv)
    so = SHARED / "speechocean762"
    if not so.is_dir():
        print(f"{so} absent: nothing to measure")
        return 0
    ctm = read_ctm(so / "alignments" / "phones.ctm")
    entries = [line.split() for line in (so / "train" / "wav.scp").read_text().splitlines()]
    entries = [(u, p) for u, p in entries if u in ctm][: args.utts]
    sums = dict(aligned=0, energy=0, inside_sil=0, inside_phones=0, audio=0)
    counts = dict(aligned=0, energy=0)
    for utt, path in entries:
        wave = load_audio(str(so / path))
        n = wave.numel()
        aligned = nonspeech_from_alignments(ctm[utt], n, min_duration=args.min_duration)
        energy = nonspeech_from_energy(wave, min_duration=args.min_duration)
        phones = mask([(round(s.start * 16000), round(s.end * 16000)) for s in ctm[utt] if s.label != SILENCE], n)
        sil = mask([(round(s.start * 16000), round(s.end * 16000)) for s in ctm[utt] if s.label == SILENCE], n)
        m_aligned, m_energy = mask(aligned, n), mask(energy, n)
        sums["aligned"] += m_aligned.sum()
        sums["energy"] += m_energy.sum()
        sums["inside_sil"] += (m_energy & sil).sum()
        sums["inside_phones"] += (m_energy & phones).sum()
        sums["recall"] = sums.get("recall", 0) + (m_energy & m_aligned).sum()
        sums["audio"] += n
        counts["aligned"] += len(aligned)
        counts["energy"] += len(energy)
    print(f"speechocean762 train/, {len(entries)} recordings, {sums['audio'] / 16000 / 60:.1f} min, ranges >= "
          f"{args.min_duration} s:")
    print(f"  alignments (SIL - 30 ms margins): {sums['aligned'] / 16000:.1f} s in {counts['aligned']} ranges")
    print(f"  energy detector: {sums['energy'] / 16000:.1f} s in {counts['energy']} ranges; "
          f"{100 * sums['inside_sil'] / sums['energy']:.1f}% of it inside aligned SIL, "
          f"{100 * sums['inside_phones'] / sums['energy']:.2f}% inside aligned phones; "
          f"recall of the alignment ranges {100 * sums['recall'] / sums['aligned']:.1f}%")
    fsdd = sorted((SHARED / "fsdd" / "recordings").glob("*"))[:: args.fsdd_every]
    if fsdd:
        waves = [load_audio(str(p)) for p in fsdd]
        total = sum(w.numel() for w in waves) / 16000
        for min_duration in (0.2, 0.1):
            ranges = [nonspeech_from_energy(w, min_duration=min_duration) for w in waves]
            seconds = sum(e - s for r in ranges for s, e in r) / 16000
            print(f"FSDD, {len(fsdd)} recordings ({total:.1f} s), min {min_duration} s: {seconds:.1f} s in "
                  f"{sum(map(len, ranges))} ranges from {sum(1 for r in ranges if r)} recordings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
