"""speechattn-infer task=phone: any Kaldi data dir (only wav.scp), bad audio skipped, long-form = whole."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from phone_data import make_phone_corpus, phone_overrides, synth_utterance
from speechattn.bin._hydra import CONF_DIR
from speechattn.bin.train import run
from speechattn.data.kaldi_dir import read_table_lists
from speechattn.tasks.phone_predictor import PhoneLabeler
from speechattn.inference.driver import infer_dir


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_phone_corpus(tmp_path_factory.mktemp("corpus"))
    exp = root / "exp"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=phone_overrides(root, exp) + ["trainer.max_epochs=2"])
    run(cfg, exp)
    return exp


def _wav_only_dir(tmp_path: Path, n: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    d = tmp_path / "new_data"
    d.mkdir()
    audio = {}
    lines = []
    for i in range(n):
        utt = f"new{i}"
        audio[utt], _ = synth_utterance(rng)
        sf.write(tmp_path / f"{utt}.wav", audio[utt], 16000)
        lines.append(f"{utt} {tmp_path / f'{utt}.wav'}\n")
    (d / "wav.scp").write_text("".join(lines))
    return d, audio


def test_infer_on_wav_scp_only(exp_dir: Path, tmp_path: Path) -> None:
    data, audio = _wav_only_dir(tmp_path)
    out = tmp_path / "out"
    infer_dir(exp_dir, data, out)
    frames = read_table_lists(out / "frames.txt", check_sorted=False)
    assert list(frames) == sorted(audio)
    for utt, wav in audio.items():
        assert len(frames[utt]) == 1 + (len(wav) - 400) // 160  # one label per 25/10 ms frame
    ctm = [line.split() for line in (out / "phones.ctm").read_text().splitlines()]
    # CTM runs re-expand to exactly the frame labels.
    for utt in audio:
        rows = [r for r in ctm if r[0] == utt]
        expanded = [r[4] for r in rows for _ in range(round(float(r[3]) / 0.01))]
        assert expanded == frames[utt]
    mtime = (out / "frames.txt").stat().st_mtime_ns
    infer_dir(exp_dir, data, out)  # complete output: skipped
    assert (out / "frames.txt").stat().st_mtime_ns == mtime


def test_bad_audio_is_skipped_and_listed(exp_dir: Path, tmp_path: Path) -> None:
    data, audio = _wav_only_dir(tmp_path, n=2)
    sf.write(tmp_path / "short.wav", np.zeros(300, dtype=np.float32), 16000)  # shorter than one window
    (tmp_path / "empty.wav").write_bytes(b"")
    lines = (data / "wav.scp").read_text()
    lines = f"a_empty {tmp_path / 'empty.wav'}\na_short {tmp_path / 'short.wav'}\n" + lines
    (data / "wav.scp").write_text(lines)
    out = tmp_path / "out"
    infer_dir(exp_dir, data, out)
    failed = (out / "failed.txt").read_text()
    assert "a_empty" in failed and "a_short" in failed and "wav.scp:1" in failed and "wav.scp:2" in failed
    assert set(read_table_lists(out / "frames.txt", check_sorted=False)) == set(audio)


def test_pipes_refused_unless_enabled(exp_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "piped"
    data.mkdir()
    (data / "wav.scp").write_text("u1 cat /nonexistent.wav |\n")
    out = tmp_path / "out"
    infer_dir(exp_dir, data, out)
    assert "pipe" in (out / "failed.txt").read_text()


def test_unsorted_wav_scp_is_an_error_naming_the_line(exp_dir: Path, tmp_path: Path) -> None:
    data, _ = _wav_only_dir(tmp_path)
    lines = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(ValueError, match=r"wav.scp:2"):
        infer_dir(exp_dir, data, tmp_path / "out")


def test_long_form_chunked_labels_equal_whole_utterance(exp_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    wav = np.concatenate([synth_utterance(rng)[0] for _ in range(40)])  # ~25 s
    path = tmp_path / "long.flac"
    sf.write(path, wav, 16000)
    labeler = PhoneLabeler.from_exp_dir(exp_dir)
    whole = labeler.label_waveform(torch.from_numpy(sf.read(path, dtype="float32")[0]))
    chunked = [lab for _, chunk in labeler.iter_label_file(str(path), chunk_frames=300) for lab in chunk]
    assert len(whole) == 1 + (len(wav) - 400) // 160
    assert chunked == whole


def test_corrupt_block_in_a_long_file_is_reported_with_its_offset(exp_dir: Path, tmp_path: Path) -> None:
    data, audio = _wav_only_dir(tmp_path, n=2)
    rng = np.random.default_rng(5)
    long_path = tmp_path / "long.flac"
    sf.write(long_path, np.concatenate([synth_utterance(rng)[0] for _ in range(60)]), 16000)
    raw = bytearray(long_path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 4096] = b"\xff" * 4096  # FLAC frames carry CRCs: soundfile notices
    long_path.write_bytes(bytes(raw))
    (data / "wav.scp").write_text(f"a_long {long_path}\n" + (data / "wav.scp").read_text())
    out = tmp_path / "out"
    infer_dir(exp_dir, data, out, chunk_frames=500)  # long file > chunk: the chunked path reads blocks
    failed = (out / "failed.txt").read_text()
    assert failed.startswith("a_long") and "corrupt audio block at" in failed and " s" in failed
    frames = read_table_lists(out / "frames.txt", check_sorted=False)
    assert set(frames) == set(audio)  # the other utterances are labelled and written completely


def test_textgrids_beside_the_ctm_read_back_with_praatio(exp_dir: Path, tmp_path: Path) -> None:
    from praatio import textgrid as praat_textgrid

    from speechattn.data.textgrid import read_phone_tier

    data, audio = _wav_only_dir(tmp_path)
    out = tmp_path / "out"
    infer_dir(exp_dir, data, out)  # without TextGrids first: asking for them afterwards redoes the run
    assert not (out / "textgrids.scp").exists()
    infer_dir(exp_dir, data, out, writer_options={"textgrid": True})
    frames = read_table_lists(out / "frames.txt", check_sorted=False)
    listed = dict(line.split() for line in (out / "textgrids.scp").read_text().splitlines())
    assert sorted(listed) == sorted(audio)
    for utt, labels in frames.items():
        grid = praat_textgrid.openTextgrid(listed[utt], includeEmptyIntervals=True)
        assert list(grid.tierNames) == ["phones"]
        assert grid.maxTimestamp == pytest.approx((len(labels) - 1) * 0.01 + 0.025)
        # Interval centres re-expand to the frame labels (SIL written as empty intervals, MFA's convention).
        segments = read_phone_tier(listed[utt], map_label=lambda p: p or "SIL")
        expanded = [next(s.label for s in segments if s.start <= 0.0125 + 0.01 * i < s.start + s.duration)
                    for i in range(len(labels))]
        assert expanded == labels


def test_textgrid_option_of_a_task_without_it_is_an_error(exp_dir: Path, tmp_path: Path) -> None:
    data, _ = _wav_only_dir(tmp_path)
    with pytest.raises(ValueError, match=r"task phone: unknown output option\(s\) \['nonsense'\]"):
        infer_dir(exp_dir, data, tmp_path / "out", writer_options={"nonsense": True})
