#!/usr/bin/env python3
"""Synthetic room impulse responses for reverberation augmentation (pyroomacoustics, image method).

    local/make_rir_set.py data/rirs                          # 3 room classes x 10 rooms x 5 RIRs, 16 kHz
    local/make_rir_set.py --num-rooms 20 --rirs-per-room 8 data/rirs
    local/make_rir_set.py --sample-rate 8000 data/rirs_8k

Writes the RIRS_NOISES layout (simulated_rirs/{smallroom,mediumroom,largeroom}/rir_list + RoomNNN/*.wav)
and rir_set.json (parameters, every room's dimensions, absorption, positions and measured RT60), so the
set is used exactly like RIRS_NOISES (augment.reverb.rir_dir=data/rirs). Skips the work when the set is
complete for the same parameters; --force redoes it (speechattn/data/augment/rir.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from speechattn.data.augment.rir import DEFAULT_ROOM_CLASSES, RirSetParams, generate_rir_set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output directory (created)")
    parser.add_argument("--num-rooms", type=int, default=None,
                        help=f"rooms per size class (default: {DEFAULT_ROOM_CLASSES[0].num_rooms})")
    parser.add_argument("--rirs-per-room", type=int, default=None,
                        help=f"microphone positions per room (default: {DEFAULT_ROOM_CLASSES[0].rirs_per_room})")
    parser.add_argument("--sample-rate", type=int, default=16000, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=RirSetParams.seed, help="default: %(default)s")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the set is complete")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    for name in ("num_rooms", "rirs_per_room", "sample_rate", "nj"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    changes = {k: v for k, v in (("num_rooms", args.num_rooms), ("rirs_per_room", args.rirs_per_room)) if v is not None}
    classes = tuple(dataclasses.replace(c, **changes) for c in DEFAULT_ROOM_CLASSES)
    generate_rir_set(args.out_dir, RirSetParams(seed=args.seed, sample_rate=args.sample_rate, classes=classes),
                     force=args.force, nj=args.nj)
    return 0


if __name__ == "__main__":
    sys.exit(main())
