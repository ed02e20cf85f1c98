"""local/prepare_speechocean762_phone.py on a tiny fake corpus (fast) and on a few real utterances."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechattn.data.alignments import PHONES, read_phone_table
from speechattn.data.audio import load_audio
from speechattn.data.kaldi_dir import read_table, read_table_lists, validate_data_dir, write_table

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "local" / "prepare_speechocean762_phone.py"
SHARED = REPO.parent / "shared"
REAL_CORPUS = SHARED / "corpora" / "speechocean762"


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_speechocean762_phone", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes (--nj > 1) look functions up by module name
    spec.loader.exec_module(module)
    return module


prepare = load_script()

TRAIN_SPEAKERS = ("0001", "0002", "0003", "0004", "0005")
TEST_SPEAKERS = ("0101", "0102")
FAILED_UTT, UNALIGNED_UTT, SHORT_UTT, WAV_EXT_UTT = "000010003", "000020003", "000030003", "000040001"


def utterances_of(speaker: str) -> list[str]:
    return [f"0{speaker}{i:04d}" for i in range(1, 4)]


def fake_ctm_lines(utt: str, duration_10ms: int, rng: np.random.Generator) -> list[str]:
    """SIL, some phones, SIL; the last segment ends on the 10 ms step at or after the audio end."""
    lines, start = [], 0
    while start < duration_10ms:
        length = min(int(rng.integers(3, 12)), duration_10ms - start)
        label = "SIL" if start == 0 or start + length == duration_10ms else str(rng.choice(PHONES[1:]))
        lines.append(f"{utt} 1 {start / 100:.2f} {length / 100:.2f} {label}")
        start += length
    return lines


@pytest.fixture
def fake_corpus(tmp_path) -> Path:
    corpus = tmp_path / "speechocean762"
    rng = np.random.default_rng(0)
    ctm: list[str] = []
    for part, speakers in (("train", TRAIN_SPEAKERS), ("test", TEST_SPEAKERS)):
        wav, utt2spk, text = {}, {}, {}
        for spk in speakers:
            for utt in utterances_of(spk):
                num_samples = 300 if utt == SHORT_UTT else int(rng.integers(8000, 16000))
                audio = corpus / "WAVE" / f"SPEAKER{spk}" / f"{utt}.flac"
                audio.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(audio), rng.uniform(-0.3, 0.3, num_samples).astype(np.float32), 16000)
                # The original corpus names .WAV files; the script must find the .flac conversion.
                suffix = ".WAV" if utt == WAV_EXT_UTT else ".flac"
                wav[utt] = f"WAVE/SPEAKER{spk}/{utt}{suffix}"
                utt2spk[utt], text[utt] = spk, "HELLO WORLD"
                if utt != UNALIGNED_UTT:
                    ctm += fake_ctm_lines(utt, -(-num_samples // 160), rng)
        for name, table in (("wav.scp", wav), ("utt2spk", utt2spk), ("text", text),
                            ("spk2gender", {spk: "mf"[int(spk) % 2] for spk in speakers})):
            write_table(corpus / part / name, table)
    (corpus / "alignments").mkdir()
    (corpus / "alignments" / "phones.ctm").write_text("\n".join(ctm) + "\n")
    (corpus / "alignments" / "failed.txt").write_text(f"{FAILED_UTT}\tRuntimeError: Failed to align\n")
    return corpus


def run(corpus: Path, out: Path, *extra: str) -> int:
    return prepare.main(["--corpus-dir", str(corpus), "--out-dir", str(out), *extra])


def expected_labels(ctm_path: Path, utt: str, num_frames: int) -> list[str]:
    """Independent check of the centre rule in integer tenths of a millisecond."""
    segments = [(round(float(f[2]) * 10000), round((float(f[2]) + float(f[3])) * 10000), f[4])
                for f in (line.split() for line in ctm_path.read_text().splitlines()) if f[0] == utt]
    labels = []
    for i in range(num_frames):
        centre = 100 * i + 125
        labels.append(next((lab for start, end, lab in segments if start <= centre < end), "SIL"))
    return labels


def test_fake_corpus(fake_corpus, tmp_path, caplog):
    out = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="prepare_speechocean762_phone"):
        assert run(fake_corpus, out) == 0
    assert read_phone_table(out / "lang" / "phones.txt") == list(PHONES)
    spk = {name: set(read_table(out / name / "spk2utt")) for name in ("train", "dev", "test")}
    assert spk["test"] == set(TEST_SPEAKERS)
    assert len(spk["dev"]) == 1 and spk["dev"].isdisjoint(spk["train"])  # default 10%, at least one
    assert spk["dev"] | spk["train"] == set(TRAIN_SPEAKERS)

    all_wav: dict[str, str] = {}
    for name in ("train", "dev", "test"):
        data = out / name
        validate_data_dir(data, require_labels="frame_labels")
        wav = read_table(data / "wav.scp")
        num_frames = {u: int(n) for u, n in read_table(data / "utt2num_frames").items()}
        labels = read_table_lists(data / "frame_labels")
        for utt, path in wav.items():
            assert Path(path).is_absolute() and Path(path).is_file()
            samples = sf.info(path).frames
            assert num_frames[utt] == 1 + (samples - 400) // 160
            assert labels[utt] == expected_labels(fake_corpus / "alignments" / "phones.ctm", utt, num_frames[utt])
        assert set(read_table(data / "spk2gender")) == set(read_table(data / "spk2utt"))
        assert set(read_table(data / "text").values()) == {"HELLO WORLD"}
        all_wav.update(wav)
    every_utt = {u for s in TRAIN_SPEAKERS + TEST_SPEAKERS for u in utterances_of(s)}
    assert set(all_wav) == every_utt - {FAILED_UTT, UNALIGNED_UTT, SHORT_UTT}
    assert all_wav[WAV_EXT_UTT].endswith(f"{WAV_EXT_UTT}.flac")  # corpus wav.scp said .WAV
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "alignment failed: 1" in messages and "no alignment: 1" in messages and "too short: 1" in messages


def test_dev_choice_is_deterministic_and_sized(fake_corpus, tmp_path):
    assert run(fake_corpus, tmp_path / "a", "--dev-speakers", "2") == 0
    assert run(fake_corpus, tmp_path / "b", "--dev-speakers", "2", "--nj", "2") == 0
    for name in ("train", "dev", "test"):
        for table in ("wav.scp", "frame_labels", "utt2num_frames"):
            assert (tmp_path / "a" / name / table).read_text() == (tmp_path / "b" / name / table).read_text()
    assert len(read_table(tmp_path / "a" / "dev" / "spk2utt")) == 2
    assert len(prepare.choose_dev_speakers([f"{i:04d}" for i in range(125)], None)) == 12


def test_idempotent_rerun_and_force(fake_corpus, tmp_path, capsys):
    out = tmp_path / "data"
    assert run(fake_corpus, out) == 0
    mtime = (out / "train" / "frame_labels").stat().st_mtime_ns
    assert run(fake_corpus, out) == 0
    assert "already prepared" in capsys.readouterr().out
    assert (out / "train" / "frame_labels").stat().st_mtime_ns == mtime

    assert run(fake_corpus, out, "--force") == 0
    assert (out / "train" / "frame_labels").stat().st_mtime_ns != mtime

    # A damaged output or different options are not "already prepared".
    (out / "dev" / "utt2spk").unlink()
    assert run(fake_corpus, out) == 0
    assert "already prepared" not in capsys.readouterr().out
    validate_data_dir(out / "dev", require_labels="frame_labels")
    assert run(fake_corpus, out, "--max-utts-per-set", "2") == 0
    assert "already prepared" not in capsys.readouterr().out
    assert all(len(read_table(out / name / "wav.scp")) <= 2 for name in ("train", "dev", "test"))


def test_missing_corpus_exits_1(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--corpus-dir", str(tmp_path / "nowhere"),
                             "--out-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "corpus not found" in result.stderr and "nowhere" in result.stderr
    assert not (tmp_path / "data").exists()


def test_real_corpus_few_utterances(tmp_path):
    if not (REAL_CORPUS / "alignments" / "phones.ctm").is_file():
        pytest.skip(f"../shared not found: {REAL_CORPUS}")
    out = tmp_path / "data"
    assert run(REAL_CORPUS, out, "--max-utts-per-set", "3") == 0
    test_speakers = set(read_table(REAL_CORPUS / "test" / "spk2utt"))
    for name in ("train", "dev", "test"):
        data = out / name
        validate_data_dir(data, require_labels="frame_labels")
        wav = read_table(data / "wav.scp")
        assert len(wav) == 3
        speakers = set(read_table(data / "utt2spk").values())
        assert (speakers <= test_speakers) == (name == "test")
        labels = read_table_lists(data / "frame_labels")
        for utt, spec in wav.items():
            num_samples = load_audio(spec).shape[0]  # decoded, unlike the script's header read
            assert len(labels[utt]) == 1 + (num_samples - 400) // 160
            assert labels[utt][0] == "SIL" and set(labels[utt]) <= set(PHONES)
            assert len(set(labels[utt])) > 3  # real speech, not just silence
    assert run(REAL_CORPUS, out, "--max-utts-per-set", "3") == 0  # idempotent re-run
