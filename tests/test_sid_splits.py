"""Speaker-ID splits, trial lists and the prepare scripts (fake corpora in tmp_path; real ones from ../shared)."""
from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_lists, validate_data_dir
from speechattn.data.sid_splits import (
    held_out_count,
    make_trials,
    rank_utterances,
    split_identification,
    split_train_dev,
)
from speechattn.data.trials import read_trials, write_trials
from speechattn.data.framing import num_frames

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VERIF_TRAINING_DIRS = ("verif_train", "verif_dev")
ALL_SO_DIRS = ("ident_train", "ident_dev", "ident_test", "verif_train", "verif_dev", "verif_test")


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "local" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_spk2utt(sizes: dict[str, int]) -> dict[str, list[str]]:
    return {spk: [f"{spk}-u{i:03d}" for i in range(n)] for spk, n in sizes.items()}


# ---------------------------------------------------------------- split rule


@pytest.mark.parametrize("n, expected", [(2, 1), (3, 1), (10, 1), (14, 1), (15, 2), (20, 2), (25, 3), (100, 10)])
def test_held_out_count_rounds_half_up(n: int, expected: int) -> None:
    assert held_out_count(n) == expected


def test_identification_split_sizes_and_partition(caplog: pytest.LogCaptureFixture) -> None:
    spk2utt = make_spk2utt({"ten": 10, "three": 3, "two": 2, "one": 1, "big": 25})
    with caplog.at_level(logging.WARNING):
        split = split_identification(spk2utt, seed=1)
    for spk, (n_train, n_dev, n_test) in {"ten": (8, 1, 1), "three": (1, 1, 1), "two": (1, 0, 1),
                                          "one": (1, 0, 0), "big": (19, 3, 3)}.items():
        counts = tuple(sum(s == spk for s in part.values()) for part in (split.train, split.dev, split.test))
        assert counts == (n_train, n_dev, n_test), spk
    all_utts = [u for utts in spk2utt.values() for u in utts]
    parts = [set(split.train), set(split.dev), set(split.test)]
    assert sum(map(len, parts)) == len(all_utts) and set().union(*parts) == set(all_utts)
    assert split.train_only_speakers == ["one"] and split.no_dev_speakers == ["two"]
    assert "one" in caplog.text and "single utterance" in caplog.text
    assert split.train["one-u000"] == "one"


def test_identification_split_is_deterministic_and_order_independent() -> None:
    spk2utt = make_spk2utt({f"spk{i}": 5 + i for i in range(20)})
    first = split_identification(spk2utt, seed=7)
    assert split_identification(spk2utt, seed=7) == first
    rng = random.Random(0)
    shuffled_speakers = list(spk2utt)
    rng.shuffle(shuffled_speakers)
    shuffled = {spk: rng.sample(spk2utt[spk], len(spk2utt[spk])) for spk in shuffled_speakers}
    again = split_identification(shuffled, seed=7)
    assert (again.train, again.dev, again.test) == (first.train, first.dev, first.test)
    # Another speaker joining does not move anyone else's utterances.
    extended = split_identification({**spk2utt, "newcomer": ["newcomer-a", "newcomer-b", "newcomer-c"]}, seed=7)
    assert {u: s for u, s in extended.test.items() if s != "newcomer"} == first.test
    # A different seed gives a different split (20 speakers: identical by chance is ~impossible).
    assert split_identification(spk2utt, seed=8).test != first.test


def test_rank_utterances_ignores_input_order_and_duplicates() -> None:
    utts = [f"u{i}" for i in range(10)]
    assert rank_utterances("s", utts) == rank_utterances("s", list(reversed(utts)) + utts[:3])
    assert sorted(rank_utterances("s", utts)) == utts


def test_train_dev_split() -> None:
    train, dev = split_train_dev(make_spk2utt({"a": 10, "b": 1, "c": 2}), seed=3)
    assert sum(s == "a" for s in dev.values()) == 1 and sum(s == "a" for s in train.values()) == 9
    assert "b-u000" in train and "b" not in dev.values()
    assert sum(s == "c" for s in dev.values()) == 1 and sum(s == "c" for s in train.values()) == 1
    assert not set(train) & set(dev)


# ---------------------------------------------------------------- trials


def test_trials_targets_nontargets_and_order() -> None:
    utt2spk = {f"{spk}-{i}": spk for spk in ("a", "b", "c", "d") for i in range(5)}
    trials = make_trials(utt2spk, nontarget_ratio=2.0, seed=5)
    targets = [t for t in trials if t.target]
    nontargets = [t for t in trials if not t.target]
    assert len(targets) == 4 * math.comb(5, 2)
    assert all(utt2spk[t.utt1] == utt2spk[t.utt2] for t in targets)
    expected_targets = {(u1, u2) for u1, u2 in itertools.combinations(sorted(utt2spk), 2) if utt2spk[u1] == utt2spk[u2]}
    assert {(t.utt1, t.utt2) for t in targets} == expected_targets
    assert len(nontargets) == 2 * len(targets)
    assert all(utt2spk[t.utt1] != utt2spk[t.utt2] for t in nontargets)
    assert all(t.utt1 < t.utt2 for t in trials)
    assert len({(t.utt1, t.utt2) for t in trials}) == len(trials)
    assert trials == sorted(trials, key=lambda t: (t.utt1, t.utt2))
    # Deterministic and independent of the input order.
    reordered = dict(sorted(utt2spk.items(), reverse=True))
    assert make_trials(reordered, nontarget_ratio=2.0, seed=5) == trials
    assert make_trials(utt2spk, nontarget_ratio=2.0, seed=6) != trials


def test_trials_use_all_nontargets_when_too_few(caplog: pytest.LogCaptureFixture) -> None:
    utt2spk = {"a1": "a", "a2": "a", "a3": "a", "b1": "b"}
    with caplog.at_level(logging.WARNING):
        trials = make_trials(utt2spk, nontarget_ratio=5.0)
    assert sum(not t.target for t in trials) == 3 and "only 3 non-target" in caplog.text


def test_trials_round_trip_and_bad_line(tmp_path: Path) -> None:
    trials = make_trials({"a1": "a", "a2": "a", "b1": "b", "b2": "b"}, nontarget_ratio=1.0)
    write_trials(tmp_path / "trials", trials)
    assert (tmp_path / "trials").read_text().splitlines()[0].split()[0] in ("0", "1")
    assert read_trials(tmp_path / "trials") == trials
    (tmp_path / "bad").write_text("1 a1 a2\ntarget a1 b1\n")
    with pytest.raises(KaldiDataError, match=r"bad:2: "):
        read_trials(tmp_path / "bad")


# ---------------------------------------------------------------- fake corpora


def write_audio(path: Path, num_samples: int, sample_rate: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).uniform(-0.3, 0.3, num_samples).astype("float32")
    sf.write(path, noise, sample_rate)


def make_fake_speechocean762(root: Path, train_sizes: dict[str, int], test_sizes: dict[str, int]) -> dict[str, int]:
    """Corpus layout like speechocean762; returns utt -> number of 16 kHz samples."""
    samples = {}
    for part, sizes in (("train", train_sizes), ("test", test_sizes)):
        wav_lines, utt2spk_lines, gender_lines = [], [], []
        for spk, n in sorted(sizes.items()):
            for i in range(n):
                utt = f"0{spk}{i:04d}"
                samples[utt] = 4000 + 160 * (len(samples) % 7) + len(samples)
                write_audio(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.flac", samples[utt], 16000, len(samples))
                # The first utterance is listed as .WAV (as in the original corpus) to test the fallback.
                suffix = ".WAV" if not wav_lines else ".flac"
                wav_lines.append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}{suffix}\n")
                utt2spk_lines.append(f"{utt}\t{spk}\n")
            gender_lines.append(f"{spk}\t{'m' if int(spk) % 2 else 'f'}\n")
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / "wav.scp").write_text("".join(wav_lines))
        (root / part / "utt2spk").write_text("".join(utt2spk_lines))
        (root / part / "spk2gender").write_text("".join(gender_lines))
    return samples


@pytest.fixture(scope="module")
def so_script() -> ModuleType:
    return load_script("prepare_sid_speechocean762")


@pytest.fixture(scope="module")
def fsdd_script() -> ModuleType:
    return load_script("prepare_sid_fsdd")


def check_speechocean762_output(out: Path) -> None:
    """Properties every prepared output must have, on fake or real data."""
    for name in ALL_SO_DIRS:
        validate_data_dir(out / name)
        assert all(Path(p).is_absolute() for p in read_table(out / name / "wav.scp").values())
    ident = [read_table(out / name / "utt2spk") for name in ("ident_train", "ident_dev", "ident_test")]
    assert not (set(ident[0]) & set(ident[1]) or set(ident[0]) & set(ident[2]) or set(ident[1]) & set(ident[2]))
    speakers = (out / "ident_train" / "speakers.txt").read_text().split()
    assert speakers == sorted(set(ident[0].values()))
    assert set(ident[1].values()) <= set(speakers) and set(ident[2].values()) <= set(speakers)
    test_utt2spk = read_table(out / "verif_test" / "utt2spk")
    test_speakers = set(test_utt2spk.values())
    for name in VERIF_TRAINING_DIRS:
        assert not set(read_table(out / name / "utt2spk").values()) & test_speakers, name
    trials = read_trials(out / "verif_test" / "trials")
    assert trials and all(t.utt1 in test_utt2spk and t.utt2 in test_utt2spk for t in trials)
    assert all((test_utt2spk[t.utt1] == test_utt2spk[t.utt2]) == t.target for t in trials)
    spk2utt = read_table_lists(out / "verif_test" / "spk2utt")
    assert sum(t.target for t in trials) == sum(math.comb(len(u), 2) for u in spk2utt.values())


def test_prepare_speechocean762_fake_corpus(tmp_path: Path, so_script: ModuleType,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    corpus, out = tmp_path / "corpus", tmp_path / "data"
    samples = make_fake_speechocean762(corpus, {"0001": 10, "0002": 10, "0003": 1}, {"0004": 4, "0005": 3})
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out)]) == 0
    check_speechocean762_output(out)
    frames = read_table(out / "ident_train" / "utt2num_frames")
    for utt, count in frames.items():
        assert int(count) == num_frames(samples[utt])
    assert (out / "ident_train" / "speakers.txt").read_text() == "0001\n0002\n0003\n0004\n0005\n"
    assert set(read_table(out / "verif_train" / "utt2spk").values()) == {"0001", "0002", "0003"}
    assert len(read_table(out / "verif_dev" / "utt2spk")) == 2  # 1 each from 0001, 0002; 0003 has one utt
    assert read_table(out / "ident_train" / "spk2gender") == {s: "m" if int(s) % 2 else "f" for s in
                                                              ("0001", "0002", "0003", "0004", "0005")}
    trials = read_trials(out / "verif_test" / "trials")
    assert sum(t.target for t in trials) == math.comb(4, 2) + math.comb(3, 2)
    assert sum(not t.target for t in trials) == 4 * 3  # ratio 5 asks for 45; only 12 exist
    assert "0003" in caplog.text  # the single-utterance speaker is logged

    # Idempotent: a second run does nothing; --force rebuilds identical content.
    mtime = (out / "ident_train" / "wav.scp").stat().st_mtime_ns
    contents = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    caplog.clear()
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out)]) == 0
    assert "up to date" in caplog.text and (out / "ident_train" / "wav.scp").stat().st_mtime_ns == mtime
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out), "--force"]) == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == contents
    # Changed options rebuild (no stale output from the old options).
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out), "--max-speakers", "2"]) == 0
    assert set(read_table(out / "ident_train" / "utt2spk").values()) == {"0001", "0002", "0004", "0005"}


def test_prepare_speechocean762_is_independent_of_file_order(tmp_path: Path, so_script: ModuleType) -> None:
    corpus = tmp_path / "corpus"
    make_fake_speechocean762(corpus, {"0001": 6, "0002": 5}, {"0004": 4, "0005": 3})
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(tmp_path / "a")]) == 0
    for part in ("train", "test"):
        for name in ("wav.scp", "utt2spk"):
            lines = (corpus / part / name).read_text().splitlines(keepends=True)
            (corpus / part / name).write_text("".join(reversed(lines)))
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(tmp_path / "b")]) == 0
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file() and not path.name.endswith(".done.json"):
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def test_prepare_speechocean762_utterance_without_speaker(tmp_path: Path, so_script: ModuleType,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    make_fake_speechocean762(corpus, {"0001": 3}, {"0002": 3})
    lines = (corpus / "test" / "utt2spk").read_text().splitlines(keepends=True)
    (corpus / "test" / "utt2spk").write_text("".join(lines[:1] + lines[2:]))  # drop the 2nd utterance's speaker
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(tmp_path / "data")]) == 1
    assert f"{corpus / 'test' / 'wav.scp'}:2: utterance '000020001' has no speaker" in caplog.text
    assert not (tmp_path / "data" / "ident_train").exists()


def test_prepare_speechocean762_missing_audio_names_line(tmp_path: Path, so_script: ModuleType,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    make_fake_speechocean762(corpus, {"0001": 3}, {"0002": 3})
    (corpus / "WAVE" / "SPEAKER0001" / "000010002.flac").unlink()
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(tmp_path / "data")]) == 1
    assert f"{corpus / 'train' / 'wav.scp'}:3: audio file not found" in caplog.text


def test_prepare_speechocean762_missing_corpus_exits_1_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "local" / "prepare_sid_speechocean762.py"), "--corpus-dir",
                             str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "corpus not found" in result.stderr and str(tmp_path / "nowhere") in result.stderr


def test_prepare_fsdd_missing_corpus_exits_1(tmp_path: Path, fsdd_script: ModuleType,
                                             caplog: pytest.LogCaptureFixture) -> None:
    assert fsdd_script.main(["--corpus-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "data")]) == 1
    assert "corpus not found" in caplog.text and str(tmp_path / "nowhere") in caplog.text
    (tmp_path / "empty").mkdir()
    assert fsdd_script.main(["--corpus-dir", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "data")]) == 1
    assert "no DIGIT_SPEAKER_INDEX" in caplog.text


def make_fake_fsdd(root: Path, speakers: list[str], per_speaker: int) -> dict[str, int]:
    """``DIGIT_SPEAKER_INDEX.flac`` at 8 kHz; returns utt -> number of 8 kHz samples."""
    samples = {}
    for spk in speakers:
        for i in range(per_speaker):
            digit, index = i % 10, i // 10
            samples[f"{spk}_{digit}_{index}"] = 2000 + 37 * len(samples)
            write_audio(root / "recordings" / f"{digit}_{spk}_{index}.flac", samples[f"{spk}_{digit}_{index}"],
                        8000, len(samples))
    (root / "recordings" / "notes.txt").write_text("not audio\n")
    return samples


def test_prepare_fsdd_fake_corpus(tmp_path: Path, fsdd_script: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    corpus, out = tmp_path / "fsdd", tmp_path / "data"
    samples = make_fake_fsdd(corpus, ["alice", "bob"], 20)
    assert fsdd_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out)]) == 0
    assert "too few speakers for verification" in caplog.text.lower()
    assert "skipped 1 file" in caplog.text
    parts = {name: read_table(out / name / "utt2spk") for name in ("ident_train", "ident_dev", "ident_test")}
    for name in parts:
        validate_data_dir(out / name)
        # 8 kHz audio is resampled to 16 kHz at load time: frames are counted on 2x the samples.
        for utt, count in read_table(out / name / "utt2num_frames").items():
            assert int(count) == num_frames(2 * samples[utt])
    assert [len(parts[n]) for n in parts] == [32, 4, 4]  # 20 per speaker -> 16/2/2
    assert set().union(*map(set, parts.values())) == set(samples)
    assert (out / "ident_train" / "speakers.txt").read_text() == "alice\nbob\n"
    assert not (out / "verif_test").exists()
    caplog.clear()
    assert fsdd_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out)]) == 0
    assert "up to date" in caplog.text


# ---------------------------------------------------------------- real corpora from ../shared


def test_prepare_speechocean762_real_speakers(tmp_path: Path, so_script: ModuleType) -> None:
    corpus = SHARED / "corpora" / "speechocean762"
    if not (corpus / "train" / "wav.scp").is_file():
        pytest.skip(f"../shared not found: {corpus}")
    out = tmp_path / "data"
    assert so_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out), "--max-speakers", "2",
                           "--nontarget-ratio", "1"]) == 0
    check_speechocean762_output(out)
    corpus_utt2spk = {**read_table(corpus / "train" / "utt2spk", check_sorted=False),
                      **read_table(corpus / "test" / "utt2spk", check_sorted=False)}
    ident = {name: read_table(out / name / "utt2spk") for name in ("ident_train", "ident_dev", "ident_test")}
    assert all(corpus_utt2spk[u] == s for part in ident.values() for u, s in part.items())
    assert [len(p) for p in ident.values()] == [4 * 8, 4, 4]  # 4 speakers x 10 utterances -> 8/1/1
    trials = read_trials(out / "verif_test" / "trials")
    # 2 test speakers x C(10, 2) targets; 1 x as many of the 10 x 10 = 100 different-speaker pairs.
    assert (sum(t.target for t in trials), sum(not t.target for t in trials)) == (2 * 45, 2 * 45)
    utt, count = next(iter(read_table(out / "verif_test" / "utt2num_frames").items()))
    wav = read_table(out / "verif_test" / "wav.scp")[utt]
    assert int(count) == num_frames(sf.info(wav).frames) and sf.info(wav).samplerate == 16000


def test_prepare_fsdd_real_speaker(tmp_path: Path, fsdd_script: ModuleType) -> None:
    corpus = SHARED / "corpora" / "fsdd"
    if not (corpus / "recordings").is_dir():
        pytest.skip(f"../shared not found: {corpus}")
    out = tmp_path / "data"
    assert fsdd_script.main(["--corpus-dir", str(corpus), "--out-dir", str(out), "--max-speakers", "1"]) == 0
    parts = [read_table(out / name / "utt2spk") for name in ("ident_train", "ident_dev", "ident_test")]
    assert [len(p) for p in parts] == [400, 50, 50]
    frames = read_table(out / "ident_test" / "utt2num_frames")
    wavs = read_table(out / "ident_test" / "wav.scp")
    for utt in list(frames)[:5]:
        info = sf.info(wavs[utt])
        assert info.samplerate == 8000 and int(frames[utt]) == num_frames(2 * info.frames)
