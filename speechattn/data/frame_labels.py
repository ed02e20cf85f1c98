"""Frame labels of a data directory (``UTT PH PH ...``, one phone per 10 ms frame) and the utterances to
train on: those with both features and labels (the rest are errors naming their line, or counted skips)."""
from __future__ import annotations

import logging
from pathlib import Path

from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_entries, read_table_lists

log = logging.getLogger(__name__)

__all__ = ["read_frame_labels", "labelled_utterances"]


def read_frame_labels(data_dir: Path, label_file: str, phones: list[str],
                      utts: list[str] | None = None) -> dict[str, list[int]]:
    """``data_dir/label_file`` (``UTT PH PH ...``) as label ids; unknown phones are errors naming the line."""
    path = data_dir / label_file
    table = read_table_lists(path)
    index = {p: i for i, p in enumerate(phones)}
    out: dict[str, list[int]] = {}
    for lineno, (utt, labels) in enumerate(table.items(), start=1):
        if utts is not None and utt not in utts:
            continue
        try:
            out[utt] = [index[p] for p in labels]
        except KeyError as e:
            raise KaldiDataError(f"{path}:{lineno}: phone {e.args[0]!r} of '{utt}' is not in phones.txt") from None
    return out


def labelled_utterances(data_dir: Path, label_file: str, labels: dict[str, list[int]],
                        drop_unlabelled: bool = False) -> list[str]:
    """The utterances of ``data_dir`` to train on: those with features (``feats.scp``) and labels.

    An utterance with features but no labels is an error naming its ``feats.scp`` line, unless
    ``drop_unlabelled`` (``data.drop_unlabelled=true``): then the ones left out are counted in the log.
    Labelled utterances without features are those stage 1 could not read (``feats_failed.txt``): left
    out and counted; any other is an error (``feats.scp`` is out of date).
    """
    feats_scp, label_path = data_dir / "feats.scp", data_dir / label_file
    with_feats = read_table_entries(feats_scp)
    unlabelled = [utt for utt in with_feats if utt not in labels]
    if unlabelled and not drop_unlabelled:
        first = unlabelled[0]
        raise KaldiDataError(f"{feats_scp}:{with_feats[first][1]}: utterance '{first}' has no labels in {label_path} "
                             f"({len(unlabelled)} of {len(with_feats)} utterances have none); "
                             f"data.drop_unlabelled=true trains without them")
    if unlabelled:
        log.warning("%s: %d of %d utterances have no labels in %s and are left out (data.drop_unlabelled=true), "
                    "e.g. '%s'", data_dir, len(unlabelled), len(with_feats), label_path, unlabelled[0])
    without_feats = [utt for utt in labels if utt not in with_feats]
    if without_feats:
        failed_path = data_dir / "feats_failed.txt"
        failed = set(read_table(failed_path, check_sorted=False, min_fields=1)) if failed_path.is_file() else set()
        stale = [utt for utt in without_feats if utt not in failed]
        if stale:
            label_lines = {utt: lineno for lineno, utt in enumerate(labels, start=1)}
            raise KaldiDataError(f"{label_path}:{label_lines[stale[0]]}: utterance '{stale[0]}' has labels but no "
                                 f"features in {feats_scp} and is not in {failed_path} ({len(stale)} such "
                                 f"utterances): re-run the feature stage")
        log.warning("%s: %d labelled utterance(s) left out: their audio could not be read in the feature stage "
                    "(listed in %s)", data_dir, len(without_feats), failed_path)
    return sorted(utt for utt in labels if utt in with_feats)
