#!/usr/bin/env python3
"""Build a corpus-layout fixture (TIMIT, LibriSpeech + MFA, VoxCeleb1) from the speechocean762 speech.

The fixtures are re-laid speechocean762 audio and alignments (Mandarin-accented read English), NOT the
real corpora, which are licensed and cannot be shipped: they let every recipe run end to end on the exact
directory layout and file formats of the real corpus. Sizes: ``--size full`` uses every aligned
speechocean762 utterance (250 speakers, 2,488 utterances; 340 MB TIMIT, 190 MB LibriSpeech, 315 MB
VoxCeleb1, each built in under a minute); ``--size small`` a few speakers (what the tests use).

Examples:
    python local/make_fixture.py timit --out-dir /tmp/fixtures/timit/TIMIT
    python local/make_fixture.py librispeech --out-dir /tmp/fixtures/librispeech   # LibriSpeech/ + alignments/
    python local/make_fixture.py voxceleb1 --out-dir /tmp/fixtures/voxceleb1 --size small
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_fixtures.librispeech import make_librispeech_fixture  # noqa: E402
from corpus_fixtures.source import DEFAULT_SOURCE, load_source  # noqa: E402
from corpus_fixtures.timit import make_timit_fixture  # noqa: E402
from corpus_fixtures.voxceleb1 import make_voxceleb1_fixture  # noqa: E402

logger = logging.getLogger("make_fixture")

# Speakers per speechocean762 part and utterances per speaker of a small fixture: enough for every split
# to be non-empty (TIMIT: 2 core + 3 dev test speakers; VoxCeleb1: 2 trial speakers).
SMALL = {"train_speakers": 6, "test_speakers": 6, "utts_per_speaker": 10}
STAMP = ".fixture.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("corpus", choices=("timit", "librispeech", "voxceleb1"), help="layout to write")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="timit/voxceleb1: the corpus directory itself; librispeech: a directory that receives "
                             "LibriSpeech/ and alignments/")
    parser.add_argument("--source-dir", type=Path, default=DEFAULT_SOURCE, help="speechocean762 root")
    parser.add_argument("--size", choices=("small", "full"), default="full", help="small: a few speakers")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out-dir holds this fixture")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.source_dir / "alignments" / "phones.ctm").is_file():
        logger.error("speechocean762 with alignments not found at %s (pass --source-dir)", args.source_dir)
        return 1
    stamp = {"corpus": args.corpus, "size": args.size, "source": str(args.source_dir.resolve())}
    stamp_path = args.out_dir / STAMP
    if not args.force and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        logger.info("%s already holds the %s %s fixture (--force rebuilds)", args.out_dir, args.size, args.corpus)
        return 0
    if args.out_dir.exists() and any(args.out_dir.iterdir()) and not stamp_path.is_file():
        logger.error("%s exists and is not a fixture made by this script: refusing to write into it", args.out_dir)
        return 1
    if stamp_path.is_file():
        shutil.rmtree(args.out_dir)  # ours (it has our stamp): rebuilt from scratch, no stale files left
    limits = SMALL if args.size == "small" else {}
    began = time.time()
    source = load_source(args.source_dir)
    if args.corpus == "timit":
        written = make_timit_fixture(source, args.out_dir, **limits)
        summary = {"sentences": len(written), "speakers": len({s.speaker for s in written})}
    elif args.corpus == "librispeech":
        subsets = make_librispeech_fixture(source, args.out_dir / "LibriSpeech", args.out_dir / "alignments",
                                           **limits)
        summary = {subset: len(utts) for subset, utts in subsets.items()}
    else:
        summary = make_voxceleb1_fixture(source, args.out_dir, **limits,
                                         test_part_speakers=2 if args.size == "small" else 40)
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    logger.info("wrote the %s %s fixture to %s in %.0f s: %s (re-laid speechocean762 speech, not the real corpus)",
                args.size, args.corpus, args.out_dir, time.time() - began, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
