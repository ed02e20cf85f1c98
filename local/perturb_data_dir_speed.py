#!/usr/bin/env python3
"""Speed-perturbed copy of a Kaldi data dir, like Kaldi's utils/data/perturb_data_dir_speed_3way.sh.

    local/perturb_data_dir_speed.py data/train data/train_sp                 # speeds 0.9, 1.0, 1.1
    local/perturb_data_dir_speed.py --factors 0.9,1.1 data/train data/train_sp2

Writes wav.scp (same audio paths), utt2speed (the factor, applied by speechattn-compute-features),
utt2spk/spk2utt with sp<factor>- prefixes, utt2num_frames and time-stretched frame_labels
(speechattn/data/speed_perturb.py). Skips the work when the output is complete; --force redoes it.
"""
from __future__ import annotations

import argparse
import logging
import sys

from speechattn.bin._hydra import one_line_errors
from speechattn.data.kaldi_dir import KaldiDataError, validate_data_dir
from speechattn.data.speed_perturb import perturb_data_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="source Kaldi data dir (wav.scp, utt2spk; frame_labels are stretched)")
    parser.add_argument("dst", help="output data dir")
    parser.add_argument("--factors", default="0.9,1.0,1.1", help="comma-separated speed factors (default: %(default)s)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate the audio is read at (default: %(default)s)")
    parser.add_argument("--allow-pipes", action="store_true", help="accept wav.scp entries 'cmd |'")
    parser.add_argument("--force", action="store_true", help="redo even if the output is complete")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        factors = [float(f) for f in args.factors.split(",") if f.strip()]
    except ValueError:
        print(f"error: --factors must be numbers separated by commas, got '{args.factors}'", file=sys.stderr)
        return 2
    try:
        perturb_data_dir(args.src, args.dst, factors, sample_rate=args.sample_rate,
                         allow_pipes=args.allow_pipes, force=args.force)
        validate_data_dir(args.dst, check_audio=False)
    except (KaldiDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main)())
