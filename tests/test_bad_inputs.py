"""The bad-input campaign of issue #13 as tests: every case a new user tried, so none of them regresses.

Each case ends in one of three ways, and the tests check which: a clear ONE-line error naming the file and
line (exit status 1, no traceback), a logged and counted skip (``failed.txt`` / ``feats_failed.txt`` / the
log), or normal work. No input may run a command: every ``cmd |`` case checks that its marker file was not
created. The entry points run in-process (``speechattn.bin.*.main`` with ``sys.argv``), so the tests see
exactly what a user sees on stderr, without a torch start-up per case.

Campaign cases (issue #13) -> tests:
  handled well before the issue: empty / too short / NaN / corrupt / missing audio, 8 kHz, stereo
  (test_audio_case, test_bad_audio_is_a_counted_skip_*), unsorted and duplicated keys (test_table_error),
  wav.scp pipes refused (test_no_command_runs), kill -9 then resume bit-identical
  (test_kill_9_then_resume_is_bit_identical), weights_only refusing a pickle (test_checkpoint_with_pickled_code_*),
  plus: inf samples, empty line, missing value, unknown option, unknown phone, missing corpus.
  1 commands in feats.scp / CMVN / embeddings run without opt-in: test_no_command_runs, test_rxspecifier_forms,
    test_allow_pipes_true_runs_the_command
  2 stale inference outputs, temporary files left: test_phase_b_* (fixed by the inference driver of #10)
  3 segments ignored by phone (and speaker) inference: test_phase_b_*_honours_segments (same)
  4 stray positional argument / non-integer stage in run.sh: test_parse_options, test_recipe_rejects_*
  5 non-UTF-8 byte, utterance missing from utt2spk: test_table_error, test_*_via_cli, test_utt2spk_missing_*
  weaker: truncated WAV, float audio outside [-1, 1] (test_audio_case), BOM (test_table_error), text /
  frame_labels missing utterances (test_missing_frame_labels_*, test_missing_transcripts_are_counted),
  disk full (test_disk_full_*), read-only experiment dir (test_unwritable_*), corrupt last.pt
  (test_corrupt_last_checkpoint_*), Hydra tracebacks (every CLI case asserts one line; test_debug_switch_*).
"""
from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from phone_data import PHONES, make_phone_corpus, phone_overrides, synth_utterance
from speechattn.bin._hydra import CONF_DIR
from speechattn.data.audio import AudioError, load_audio
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_lists, write_table
from speechattn.data.kaldi_io import is_command, read_scp
from speechattn.features.cmvn import CmvnError, read_stats
from speechattn.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from speechattn.models.frame_classifier import build_phone_model
from speechattn.models.speaker import build_sid_model
from speechattn.utils import atomic
from speechattn.utils.atomic import OutputError

REPO = Path(__file__).resolve().parents[1]
PHONE_RUN = REPO / "recipes" / "speechocean762" / "phone" / "run.sh"


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``cli(app, *overrides) -> (exit status, stderr)``: run ``speechattn-<app>`` in this process."""

    def run(app: str, *overrides: str) -> tuple[int, str]:
        module = importlib.import_module(f"speechattn.bin.{app.replace('-', '_')}")
        monkeypatch.setattr(sys, "argv", [f"speechattn-{app}", *overrides])
        capsys.readouterr()
        try:
            module.main()
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        return status, capsys.readouterr().err

    return run


def assert_one_line_error(status: int, stderr: str, *fragments: str) -> str:
    """Exit status 1, no traceback, exactly one ``error:`` line holding every fragment; returns the line."""
    assert status == 1, stderr
    assert "Traceback" not in stderr and "Error executing job" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "error: " in line]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_lines(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def train_args(corpus: Path, exp: Path, train_dir: Path | None = None, *extra: str) -> list[str]:
    """Overrides of a quick mlp_context phone training (``train_dir`` replaces the corpus's train set)."""
    args = phone_overrides(corpus, exp, "mlp_context")
    if train_dir is not None:
        args = [f"data.train_dir={train_dir}" if a.startswith("data.train_dir=") else a for a in args]
    return [*args, *extra]


def copy_data_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("split*", "log"))
    return dst


def replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic phone corpus: train (24 utts, 2 speakers), dev (6), lang; features and CMVN stats."""
    return make_phone_corpus(tmp_path_factory.mktemp("corpus"))


def _config(name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=name, overrides=overrides), resolve=True)


def make_phone_exp(exp: Path, corpus: Path, constant_label: int | None = None, seed: int = 0) -> Path:
    """An (untrained) mlp_context phone model saved as an experiment dir; ``constant_label`` makes every
    frame that phone (zero weights, one-hot output bias), so two experiments label audio differently."""
    config = _config("train", phone_overrides(corpus, exp, "mlp_context") + ["cmvn=none"])
    torch.manual_seed(seed)
    model = build_phone_model(config["model"], 80, len(PHONES))
    if constant_label is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            last_bias = [p for name, p in model.named_parameters() if name.endswith("bias")][-1]
            last_bias[constant_label] = 1.0
    exp.mkdir(parents=True, exist_ok=True)
    save_checkpoint(exp / "model.pt", {"model": model.state_dict(), "config": config, "phones": PHONES,
                                       "input_dim": 80})
    shutil.copyfile(corpus / "train" / "feats.yaml", exp / "feats.yaml")
    return exp


@pytest.fixture(scope="module")
def phone_exp(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phone_exp(tmp_path_factory.mktemp("phone_exp") / "exp", corpus)


@pytest.fixture(scope="module")
def sid_exp(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) small speaker model over the corpus's two speakers."""
    exp = tmp_path_factory.mktemp("sid_exp") / "exp"
    config = _config("train_sid", [f"exp_dir={exp}", "cmvn=none", "model.d_model=16", "model.num_layers=1",
                                   "model.num_heads=2", "model.ffn_dim=32", "sid.embed_dim=8",
                                   "sid.pooling_kwargs.hidden_dim=8", "augment=none"])  # 2 head classes
    model = build_sid_model(config["model"], config["sid"], 80, 2)
    exp.mkdir(parents=True)
    save_checkpoint(exp / "model.pt", {"model": model.state_dict(), "config": config, "speakers": ["spk0", "spk1"],
                                       "input_dim": 80})
    shutil.copyfile(corpus / "train" / "feats.yaml", exp / "feats.yaml")
    return exp


def wav_dir(root: Path, utts: list[str], seed: int = 7) -> tuple[Path, dict[str, np.ndarray]]:
    """A data dir with only wav.scp: one synthetic utterance per id."""
    rng = np.random.default_rng(seed)
    data, audio = root / "data", {}
    (root / "wav").mkdir(parents=True, exist_ok=True)
    for utt in utts:
        audio[utt] = synth_utterance(rng)[0]
        sf.write(root / "wav" / f"{utt}.wav", audio[utt], 16000)
    write_table(data / "wav.scp", {utt: str(root / "wav" / f"{utt}.wav") for utt in utts})
    return data, audio


# ------------------------------------------------------------------------------------------------- audio

def _write(path: Path, samples: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


def _raw(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def _truncated(path: Path) -> Path:
    _write(path, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a copy cut short: the header still says 1 s
    return path


SECOND = 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)

# (case, writer(tmp) -> wav.scp value, expected samples at 16 kHz or None, error fragment)
AUDIO_CASES = [
    ("empty file", lambda d: _raw(d / "a.wav", b""), None, "cannot read audio"),
    ("too short", lambda d: str(_write(d / "a.wav", SECOND[:300])), None, "too short"),
    ("nan samples", lambda d: str(_write(d / "a.wav", np.where(np.arange(16000) == 9000, np.nan, SECOND)
                                         .astype(np.float32), subtype="FLOAT")), None, "non-finite"),
    ("inf samples", lambda d: str(_write(d / "a.wav", np.where(np.arange(16000) == 9000, np.inf, SECOND)
                                         .astype(np.float32), subtype="FLOAT")), None, "non-finite"),
    ("corrupt bytes", lambda d: _raw(d / "a.wav", b"RIFF" + bytes(range(256)) * 8), None, "cannot read audio"),
    ("missing file", lambda d: str(d / "nowhere.wav"), None, "audio file not found"),
    ("8 kHz", lambda d: str(_write(d / "a.wav", SECOND[:8000], rate=8000)), 16000, None),
    ("stereo", lambda d: str(_write(d / "a.wav", np.stack([SECOND, SECOND], axis=1))), 16000, None),
    ("float slightly above 1", lambda d: str(_write(d / "a.wav", SECOND * 1.5 / np.abs(SECOND).max(), subtype="FLOAT")),
     16000, None),
    ("truncated wav", lambda d: str(_truncated(d / "a.wav")), None, "truncated file"),
    ("float far outside [-1, 1]", lambda d: str(_write(d / "a.wav", SECOND * 32768, subtype="FLOAT")), None,
     "far outside [-1, 1]"),
    ("offset into a command", lambda d: f"touch {d / 'MARKER'}; cat x.wav |:12", None, "not an audio file"),
]


@pytest.mark.parametrize("case, make, samples, error", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_audio_case(case, make, samples, error, tmp_path: Path) -> None:
    spec = make(tmp_path)
    if error is None:
        assert load_audio(spec, where="wav.scp:7").shape == (samples,)
    else:
        with pytest.raises(AudioError) as e:
            load_audio(spec, where="wav.scp:7")
        assert str(e.value).startswith("wav.scp:7: ") and error in str(e.value)
    assert not (tmp_path / "MARKER").exists()


def _bad_audio_dir(root: Path) -> tuple[Path, dict[str, str]]:
    """wav.scp with every unusable-audio case between two good utterances; returns (dir, {utt: fragment})."""
    data, _ = wav_dir(root, ["a_good", "z_good"])
    entries = dict(read_table(data / "wav.scp"))
    expected = {}
    for i, (case, make, samples, error) in enumerate(AUDIO_CASES):
        if error is None:
            continue
        sub = root / f"case{i}"
        sub.mkdir()
        utt = f"m_{i:02d}"
        entries[utt] = make(sub)
        expected[utt] = error
    write_table(data / "wav.scp", entries)
    return data, expected


def test_bad_audio_is_a_counted_skip_in_inference(phone_exp: Path, tmp_path: Path, cli) -> None:
    data, expected = _bad_audio_dir(tmp_path)
    out = tmp_path / "out"
    status, stderr = cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={data}", f"output_dir={out}")
    assert status == 0, stderr
    assert list(read_table_lists(out / "frames.txt", check_sorted=False)) == ["a_good", "z_good"]
    failed = {line.split()[0]: line for line in (out / "failed.txt").read_text().splitlines()}
    assert set(failed) == set(expected)
    lines = {utt: i for i, utt in enumerate(read_table(data / "wav.scp"), start=1)}
    for utt, fragment in expected.items():
        assert fragment in failed[utt] and f"wav.scp:{lines[utt]}" in failed[utt]
    assert f"{len(expected)} skipped" in (out / "infer.log").read_text()
    assert not list(tmp_path.glob("case*/MARKER"))


def test_bad_audio_is_a_counted_skip_in_feature_extraction(tmp_path: Path, cli) -> None:
    data, expected = _bad_audio_dir(tmp_path)
    status, stderr = cli("compute-features", f"data_dir={data}", "nj=1", "progress=false")
    assert status == 0, stderr
    assert set(read_table(data / "feats.scp")) == {"a_good", "z_good"}
    failed = read_table(data / "feats_failed.txt")
    assert set(failed) == set(expected) and all(expected[u] in failed[u] for u in expected)


# ------------------------------------------------------------------------------------------------ tables

TABLE_CASES = [
    ("unsorted keys", b"b x\na y\n", 2, "not sorted"),
    ("duplicated key", b"a x\na y\n", 2, "duplicated key 'a' (first on line 1)"),
    ("empty line", b"a x\n\nb y\n", 2, "empty line"),
    ("missing value", b"a x\nb\n", 2, "missing value"),
    ("non-UTF-8 byte", b"a x\nb caf\xe9\n", 2, "not valid UTF-8 (byte 0xe9 at column 6)"),
    ("UTF-8 byte-order mark", b"\xef\xbb\xbfa x\nb y\n", 1, "byte-order mark"),
]


@pytest.mark.parametrize("case, content, line, fragment", TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_table_error(case, content, line, fragment, tmp_path: Path) -> None:
    path = tmp_path / "utt2spk"
    path.write_bytes(content)
    with pytest.raises(KaldiDataError) as e:
        read_table(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and fragment in str(e.value)
    assert "not sorted" not in str(e.value) or case == "unsorted keys"  # the BOM is not a sorting problem


@pytest.mark.parametrize("table, content, line, fragment", [
    ("wav.scp", b"a_utt {wav}\nb_utt caf\xe9.wav\n", 2, "not valid UTF-8"),
    ("utt2spk", b"\xef\xbb\xbfa_utt s1\nb_utt s1\n", 1, "byte-order mark"),
], ids=["non-UTF-8 wav.scp", "BOM in utt2spk"])
def test_table_errors_via_cli(table, content, line, fragment, tmp_path: Path, cli) -> None:
    data, _ = wav_dir(tmp_path, ["a_utt", "b_utt"])
    wav = read_table(data / "wav.scp")["a_utt"]
    write_table(data / "utt2spk", {"a_utt": "s1", "b_utt": "s1"})
    (data / table).write_bytes(content.replace(b"{wav}", wav.encode()))
    status, stderr = cli("compute-features", f"data_dir={data}", "nj=1", "progress=false")
    assert_one_line_error(status, stderr, f"{data / table}:{line}:", fragment)


def test_utt2spk_missing_an_utterance_names_the_line(tmp_path: Path, cli) -> None:
    data, _ = wav_dir(tmp_path, ["u1", "u2", "u3"])
    write_table(data / "utt2spk", {"u1": "s1", "u3": "s1"})
    status, stderr = cli("compute-features", f"data_dir={data}", "nj=2", "progress=false")
    assert_one_line_error(status, stderr, f"{data / 'wav.scp'}:2: utterance 'u2' has no speaker in")
    assert not (data / "split2").exists()  # no half-written split (the campaign's split had no spk2utt)


def test_segment_outside_wav_scp_names_the_line(tmp_path: Path, cli) -> None:
    data, _ = wav_dir(tmp_path, ["r1"])
    write_lines(data / "segments", "s1 r1 0.0 0.5", "s2 r9 0.0 0.5")
    status, stderr = cli("compute-features", f"data_dir={data}", "nj=1", "progress=false")
    assert_one_line_error(status, stderr, f"{data / 'segments'}:2:")


def test_unknown_phone_in_frame_labels_names_the_line(corpus: Path, tmp_path: Path, cli) -> None:
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    labels_path = train / "frame_labels"
    first = labels_path.read_text().splitlines()[2].split()
    replace_line(labels_path, 3, " ".join([first[0], "XX", *first[2:]]))
    status, stderr = cli("train", *train_args(corpus, tmp_path / "exp", train, "trainer.max_epochs=1"))
    assert_one_line_error(status, stderr, f"{labels_path}:3: phone 'XX'")


# ------------------------------------------------------------------------------- commands in rxspecifiers

@pytest.mark.parametrize("value, command", [
    ("fbank/raw_fbank.1.ark:42", False), ("raw.ark", False), ("raw.ark:42[0:10]", False),
    ("copy-feats ark:a.ark ark:- |", True), ("cmd |:42", True), ("cmd |:42[0:3]", True), ("| cmd", True),
    ("-", True), ("  cmd args |  ", True),
])
def test_rxspecifier_forms(value: str, command: bool) -> None:
    assert is_command(value) is command


def _feats_command(tmp_path: Path, form: str) -> str:
    marker = tmp_path / "MARKER"
    return {"pipe": f"touch {marker}; cat /dev/null |", "offset": f"touch {marker}; cat x.ark |:12"}[form]


def _entry_feats_scp(name: str, corpus: Path, tmp_path: Path, command: str, cli) -> tuple[int, str, str]:
    """Put ``command`` on line 3 of an scp read by entry point ``name``; run it. -> (status, stderr, scp)."""
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    exp = tmp_path / "exp"
    if name in ("compute-cmvn", "train phone", "train sid"):
        scp = train / "feats.scp"
        utt = list(read_table(scp))[2]
        replace_line(scp, 3, f"{utt} {command}")
    if name == "compute-cmvn":
        status, stderr = cli("compute-cmvn", f"data_dir={train}", "cmvn=global")
    elif name == "train phone":
        status, stderr = cli("train", *train_args(corpus, exp, train))
    elif name == "train sid":
        write_lines(train / "speakers.txt", "spk0", "spk1")
        status, stderr = cli("train", "--config-name", "train_sid", f"exp_dir={exp}", f"data.train_dir={train}",
                             f"data.valid_dir={corpus / 'dev'}", "cmvn=global_mean")
    elif name == "train with speaker CMVN":
        scp = train / "cmvn_spk.scp"
        write_lines(scp, f"spk0 {train / 'cmvn_global.ark'}:7", f"spk1 {command}")
        status, stderr = cli("train", *train_args(corpus, exp, train, "cmvn=speaker"))
        return status, stderr, f"{scp}:2"
    elif name == "score sid":
        hyp = tmp_path / "decode"
        scp = write_lines(hyp / "embeddings.scp", f"{list(read_table(train / 'utt2spk'))[0]} {command}")
        (hyp / "failed.txt").write_text("")
        status, stderr = cli("score", "task=sid", f"exp_dir={exp}", f"ref_dir={train}", f"hyp_dir={hyp}",
                             f"output_dir={tmp_path / 'scores'}")
        return status, stderr, f"{scp}:1"
    return status, stderr, f"{train / 'feats.scp'}:3"


SCP_ENTRY_POINTS = ["compute-cmvn", "train phone", "train sid", "train with speaker CMVN", "score sid"]


@pytest.mark.parametrize("form", ["pipe", "offset"])
@pytest.mark.parametrize("entry", SCP_ENTRY_POINTS)
def test_no_command_runs_from_an_scp(entry: str, form: str, corpus: Path, tmp_path: Path, cli) -> None:
    status, stderr, where = _entry_feats_scp(entry, corpus, tmp_path, _feats_command(tmp_path, form), cli)
    assert_one_line_error(status, stderr, f"{where}: refusing to run the command", "allow_pipes=true")
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("entry", ["compute-features", "infer phone", "infer sid", "perturb speed"])
def test_no_command_runs_from_wav_scp(entry: str, corpus: Path, phone_exp: Path, sid_exp: Path,
                                      tmp_path: Path, cli) -> None:
    data, _ = wav_dir(tmp_path, ["u1", "u2"])
    marker = tmp_path / "MARKER"
    write_table(data / "wav.scp", {**read_table(data / "wav.scp"), "u3": f"touch {marker}; cat /dev/null |"})
    out = tmp_path / "out"
    if entry == "compute-features":
        status, stderr = cli("compute-features", f"data_dir={data}", "nj=1", "progress=false")
        failed = (data / "feats_failed.txt").read_text()
    elif entry.startswith("infer"):
        exp = phone_exp if entry == "infer phone" else sid_exp
        status, stderr = cli("infer", f"task={entry.split()[1]}", f"exp_dir={exp}", f"data_dir={data}",
                             f"output_dir={out}")
        failed = (out / "failed.txt").read_text()
    else:
        write_table(data / "utt2spk", {u: "s1" for u in ("u1", "u2", "u3")})
        write_table(data / "spk2utt", {"s1": "u1 u2 u3"})
        script = REPO / "local" / "perturb_data_dir_speed.py"
        result = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "sp")], capture_output=True,
                                text=True, timeout=120)
        status, stderr, failed = result.returncode, result.stderr, result.stderr
        assert_one_line_error(status, stderr, f"{data / 'wav.scp'}:3")
    if entry != "perturb speed":  # a counted skip: the other utterances are processed
        assert status == 0, stderr
        assert failed.startswith("u3 ") and "allow_pipes" in failed
    assert "pipes" in failed and not marker.exists()


def test_allow_pipes_true_runs_the_command(corpus: Path, tmp_path: Path, cli) -> None:
    """The positive control: with the explicit opt-in, Kaldi-style pipes work (so the refusals above are real)."""
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    scp = train / "feats.scp"
    utt, value = list(read_table(scp).items())[2]
    kaldiio.save_mat(str(tmp_path / "one.mat"), kaldiio.load_mat(value))
    marker = tmp_path / "MARKER"
    replace_line(scp, 3, f"{utt} touch {marker}; cat {tmp_path / 'one.mat'} |")
    (train / "cmvn_global.ark").unlink()
    status, stderr = cli("compute-cmvn", f"data_dir={train}", "cmvn=global", "allow_pipes=true")
    assert status == 0, stderr
    assert marker.exists() and (train / "cmvn_global.ark").is_file()


def test_stats_and_scp_readers_refuse_commands(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    scp = write_lines(tmp_path / "cmvn.scp", f"spk1 touch {marker}; cat x |")
    with pytest.raises(KaldiDataError, match=r"cmvn.scp:1: refusing"):
        read_stats(scp)
    with pytest.raises(KaldiDataError, match=r"cmvn.scp:1: refusing"):
        read_scp(scp)
    with pytest.raises(CmvnError, match="not found"):  # a command as the stats path is not a file
        read_stats(f"touch {marker} |")
    assert not marker.exists()


# --------------------------------------------------------------------------------------- recipe options

@pytest.fixture
def options_script(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "run.sh", "#!/usr/bin/env bash", "# A recipe.", "set -euo pipefail",
                       "stage=0          # first stage", "stop_stage=5     # last stage",
                       "corpus_dir=      # corpus", "force=false      # redo",
                       f". {REPO / 'utils' / 'parse_options.sh'}",
                       'echo "stage=$stage stop_stage=$stop_stage corpus_dir=$corpus_dir force=$force"')


@pytest.mark.parametrize("args, status, expected", [
    ([], 0, "stage=0 stop_stage=5 corpus_dir= force=false"),
    (["--stage", "2", "--corpus-dir=/c", "--force", "true"], 0, "stage=2 stop_stage=5 corpus_dir=/c force=true"),
    (["extra", "--corpus-dir", "/nonexistent", "--stop-stage", "0"], 1, "unexpected argument 'extra'"),
    (["--corpus-dir", "/c", "extra"], 1, "unexpected argument 'extra'"),
    (["--stage", "abc"], 1, "option --stage needs an integer, got 'abc'"),
    (["--stop-stage=1.5"], 1, "option --stop-stage needs an integer, got '1.5'"),
    (["--force", "yes"], 1, "option --force needs true or false, got 'yes'"),
    (["--nope", "1"], 1, "unknown option --nope"),
    (["--stage"], 1, "option --stage needs a value"),
], ids=["defaults", "valid", "positional first", "positional last", "non-integer stage",
        "non-integer stop-stage", "non-boolean", "unknown option", "missing value"])
def test_parse_options(options_script: Path, args: list[str], status: int, expected: str) -> None:
    result = subprocess.run(["bash", str(options_script), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == status
    if status == 0:
        assert result.stdout.strip() == expected
    else:
        assert result.stdout == "" and expected in result.stderr and len(result.stderr.splitlines()) == 1


def test_parse_options_help_lists_the_options(options_script: Path) -> None:
    result = subprocess.run(["bash", str(options_script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--stop-stage" in result.stdout and "[5] last stage" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["extra", "--corpus-dir", "/nonexistent", "--stop-stage", "0"], "unexpected argument 'extra'"),
    (["--stage", "abc"], "--stage needs an integer"),
], ids=["stray positional", "stage abc"])
def test_recipe_rejects_bad_options(args: list[str], fragment: str, tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(PHONE_RUN), *args], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode != 0 and fragment in result.stderr
    assert "integer expression expected" not in result.stderr and "stage 0" not in result.stderr


# -------------------------------------------------------------------------------------- training labels

def test_missing_frame_labels_are_an_error_naming_the_line(corpus: Path, tmp_path: Path, cli) -> None:
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    labels = read_table(train / "frame_labels")
    dropped = list(labels)[5]
    write_table(train / "frame_labels", {u: v for u, v in labels.items() if u != dropped})
    overrides = train_args(corpus, tmp_path / "exp", train, "trainer.max_epochs=1")
    status, stderr = cli("train", *overrides)
    assert_one_line_error(status, stderr, f"{train / 'feats.scp'}:6: utterance '{dropped}' has no labels",
                          "data.drop_unlabelled=true")
    # With the documented option the utterance is left out, and counted in the log.
    status, stderr = cli("train", *overrides, "data.drop_unlabelled=true")
    assert status == 0, stderr
    log = (tmp_path / "exp" / "train.log").read_text()
    assert f"1 of {len(labels)} utterances have no labels" in log and f"train: {len(labels) - 1} utterances" in log


def test_labelled_utterance_without_features_is_counted_or_an_error(corpus: Path, tmp_path: Path, cli) -> None:
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    feats = read_table(train / "feats.scp")
    gone = list(feats)[3]
    write_table(train / "feats.scp", {u: v for u, v in feats.items() if u != gone})
    overrides = train_args(corpus, tmp_path / "exp", train, "trainer.max_epochs=1")
    status, stderr = cli("train", *overrides)  # not explained by the feature stage: feats.scp is stale
    assert_one_line_error(status, stderr, f"{train / 'frame_labels'}:4: utterance '{gone}' has labels but no features")
    write_table(train / "feats_failed.txt", {gone: "cannot read audio"})  # stage 1 skipped it: counted
    status, stderr = cli("train", *overrides)
    assert status == 0, stderr
    assert "1 labelled utterance(s) left out" in (tmp_path / "exp" / "train.log").read_text()


def test_speaker_outside_the_training_speakers_names_the_line(corpus: Path, tmp_path: Path, cli) -> None:
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    write_lines(train / "speakers.txt", "spk0")  # the closed set lacks spk1
    line = next(i for i, spk in enumerate(read_table(train / "utt2spk").values(), start=1) if spk == "spk1")
    status, stderr = cli("train", "--config-name", "train_sid", f"exp_dir={tmp_path / 'exp'}",
                         f"data.train_dir={train}", f"data.valid_dir={corpus / 'dev'}", "cmvn=global_mean")
    assert_one_line_error(status, stderr, f"{train / 'utt2spk'}:{line}: speaker 'spk1'", "training speaker list")


def test_missing_transcripts_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("prepare_speechocean762_phone",
                                                  REPO / "local" / "prepare_speechocean762_phone.py")
    prepare = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = prepare
    spec.loader.exec_module(prepare)
    corpus = tmp_path / "corpus"
    (corpus / "WAVE").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ctm = []
    for part, speakers in (("train", ("0001", "0002", "0003")), ("test", ("0101",))):
        wav, utt2spk, text = {}, {}, {}
        for spk in speakers:
            for i in (1, 2):
                utt = f"0{spk}{i:04d}"
                sf.write(corpus / "WAVE" / f"{utt}.flac", rng.uniform(-0.3, 0.3, 8000).astype(np.float32), 16000)
                wav[utt], utt2spk[utt] = f"WAVE/{utt}.flac", spk
                if utt != "000010002":  # one utterance without a transcript
                    text[utt] = "HELLO"
                ctm += [f"{utt} 1 0.00 0.20 SIL", f"{utt} 1 0.20 0.30 AA"]
        for name, table in (("wav.scp", wav), ("utt2spk", utt2spk), ("text", text), ("spk2gender", {})):
            write_table(corpus / part / name, table)
    write_lines(corpus / "alignments" / "phones.ctm", *ctm)
    with caplog.at_level("WARNING", logger="prepare_speechocean762_phone"):
        assert prepare.main(["--corpus-dir", str(corpus), "--out-dir", str(tmp_path / "data"),
                             "--dev-speakers", "1", "--nj", "1"]) == 0
    text_tables = [read_table(tmp_path / "data" / s / "text", min_fields=1) for s in ("train", "dev", "test")]
    assert "000010002" not in set().union(*text_tables)  # no empty transcript invented
    # in dev (1 speaker, 2 utterances) or train (2 speakers), depending on which speaker is chosen for dev
    assert any(f"1 of {n} utterances have no transcript" in caplog.text for n in (2, 4)), caplog.text


# ------------------------------------------------------------------------------------------ checkpoints

def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'MARKER'}",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: cannot load checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "MARKER").exists()


def test_corrupt_model_in_inference_is_one_line(corpus: Path, tmp_path: Path, cli) -> None:
    exp = make_phone_exp(tmp_path / "exp", corpus)
    (exp / "model.pt").write_bytes((exp / "model.pt").read_bytes()[:500])
    data, _ = wav_dir(tmp_path, ["u1"])
    status, stderr = cli("infer", "task=phone", f"exp_dir={exp}", f"data_dir={data}", f"output_dir={tmp_path / 'out'}")
    assert_one_line_error(status, stderr, f"{exp / 'model.pt'}: cannot load checkpoint")


def _train_in_process(overrides: list[str]) -> None:
    from speechattn.bin.train import run
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run(cfg, Path(cfg.exp_dir))


# Checkpoint saves are slowed down in the child so that the kill lands in the middle of training.
_SLOW_SAVES = ("import sys, time; import speechattn.training.loop as loop; save = loop.Trainer.save; "
               "loop.Trainer.save = lambda self, tag: (save(self, tag), time.sleep(0.4))[0]; "
               "from speechattn.bin.train import main; sys.argv[0] = 'speechattn-train'; main()")


def test_kill_9_then_resume_is_bit_identical(corpus: Path, tmp_path: Path) -> None:
    common = ["trainer.max_epochs=2", "trainer.save_every_steps=1", "model.dropout=0.1"]
    _train_in_process(phone_overrides(corpus, tmp_path / "straight", "mlp_context") + common)
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_SAVES, *phone_overrides(corpus, killed, "mlp_context"),
                              *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            last = killed / "checkpoints" / "last.pt"
            if last.is_file() and load_checkpoint(last)["step"] >= 4:
                break
            time.sleep(0.05)
        assert child.poll() is None, "training finished before it could be killed"
        child.kill()  # SIGKILL: no handler, no cleanup
    finally:
        child.wait(timeout=30)
    assert child.returncode == -9
    interrupted_at = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    _train_in_process(phone_overrides(corpus, killed, "mlp_context") + common)  # resumes
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert interrupted_at < a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(corpus: Path, tmp_path: Path, cli) -> None:
    common = ["trainer.max_epochs=3", "trainer.save_every_steps=1"]
    _train_in_process(phone_overrides(corpus, tmp_path / "straight", "mlp_context") + common)
    steps_per_epoch = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch-1.pt")["step"]
    exp = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):  # interrupted in epoch 3, last.pt written mid-epoch
        _train_in_process(phone_overrides(corpus, exp, "mlp_context") + common +
                          [f"trainer.stop_after_steps={2 * steps_per_epoch + 2}"])
    last = exp / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated (disk filled up, copy cut short)
    status, stderr = cli("train", *phone_overrides(corpus, exp, "mlp_context"), *common)
    assert status == 0, stderr
    log = (exp / "train.log").read_text()
    assert f"{last}: cannot load checkpoint" in log and "epoch-2.pt instead" in log
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (tmp_path / "straight", exp))
    assert a["step"] == b["step"] == 3 * steps_per_epoch
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # as if never interrupted
    # Nothing usable at all: one line naming the files.
    (exp / ".done").unlink()
    for path in (exp / "checkpoints").glob("*.pt"):
        path.write_bytes(b"not a checkpoint")
    status, stderr = cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=4",
                         "trainer.save_every_steps=1")
    assert_one_line_error(status, stderr, "no usable checkpoint", "last.pt", "epoch-3.pt")


# ------------------------------------------------------------------------------- disk full, permissions

@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch):
    """Make atomic writes whose file name contains ``which`` go to /dev/full (every write: ENOSPC)."""

    def install(which: str) -> None:
        real = tempfile.mkstemp

        def mkstemp(prefix: str = "", suffix: str = "", dir: str | None = None):  # noqa: A002 - tempfile's name
            fd, tmp = real(prefix=prefix, suffix=suffix, dir=dir)
            if which in prefix:
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            return fd, tmp

        monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)

    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available to simulate a full disk")
    return install


def test_disk_full_while_saving_a_checkpoint_names_the_file(tmp_path: Path, disk_full) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"w": torch.ones(3)})
    disk_full("last.pt")
    with pytest.raises(OutputError) as e:
        save_checkpoint(path, {"w": torch.zeros(1000, 100)})
    assert str(e.value).startswith(f"{path}: cannot write: No space left on device") and e.value.errno == errno.ENOSPC
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left


def test_disk_full_during_training_is_one_line(corpus: Path, tmp_path: Path, disk_full, cli) -> None:
    disk_full("last.pt")
    status, stderr = cli("train", *phone_overrides(corpus, tmp_path / "exp", "mlp_context"), "trainer.max_epochs=1")
    assert_one_line_error(status, stderr, f"{tmp_path / 'exp' / 'checkpoints' / 'last.pt'}: cannot write: No space")
    assert "Traceback" in (tmp_path / "exp" / "train.log").read_text()  # the details are in the log


def test_output_error_survives_a_worker_process() -> None:
    """Feature extraction runs jobs in worker processes: the error must arrive with its path."""
    import pickle

    error = pickle.loads(pickle.dumps(OutputError("/data/fbank/raw_fbank.1.ark", "No space left on device",
                                                  errno.ENOSPC)))
    assert str(error) == "/data/fbank/raw_fbank.1.ark: cannot write: No space left on device"
    assert error.errno == errno.ENOSPC


def test_permission_denied_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(prefix: str = "", suffix: str = "", dir: str | None = None):  # noqa: A002
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "xyz" + suffix))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=rf"{tmp_path / 'scores.json'}: cannot write: Permission denied "
                                          rf"\(cannot create files in {tmp_path}\)"):
        atomic.atomic_write_text(tmp_path / "scores.json", "{}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (covered by the simulated case)")
def test_read_only_directory_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match=r"ro/x.txt: cannot write: Permission denied"):
        atomic.atomic_write_text(tmp_path / "ro" / "x.txt", "x")


def test_unwritable_experiment_dir_is_one_line(corpus: Path, tmp_path: Path, cli) -> None:
    """Hydra cannot create its log file (here a directory stands in its way, which also stops root):
    one line naming the file, not a double traceback."""
    exp = tmp_path / "exp"
    (exp / "train.log").mkdir(parents=True)
    status, stderr = cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=1")
    assert_one_line_error(status, stderr, f"{exp / 'train.log'}: Is a directory")


def test_debug_switch_shows_the_traceback(corpus: Path, tmp_path: Path, cli, monkeypatch) -> None:
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    (train / "utt2spk").write_bytes(b"\xef\xbb\xbf" + (train / "utt2spk").read_bytes())
    status, stderr = cli("compute-cmvn", f"data_dir={train}", "cmvn=speaker")
    assert_one_line_error(status, stderr, f"{train / 'utt2spk'}:1: starts with a UTF-8 byte-order mark")
    log = next((train / "log").glob("*/compute_cmvn.log")).read_text()
    assert "Traceback" in log and "KaldiDataError" in log
    monkeypatch.setenv("SPEECHATTN_DEBUG", "1")
    status, stderr = cli("compute-cmvn", f"data_dir={train}", "cmvn=speaker")
    assert status == 1 and "Traceback" in stderr and "byte-order mark" in stderr


def test_other_errors_keep_hydras_report(corpus: Path, tmp_path: Path, cli) -> None:
    """Bugs and configuration mistakes are not input errors: Hydra's usual report, unchanged."""
    train = copy_data_dir(corpus / "train", tmp_path / "train")
    status, stderr = cli("compute-cmvn", f"data_dir={train}", "cmvn.mode=bogus")
    assert status == 1 and "Traceback" in stderr and "ValueError: cmvn.mode must be one of" in stderr
    status, stderr = cli("compute-cmvn", f"data_dir={train}", "nosuchkey=1")
    assert status == 1 and "Could not override 'nosuchkey'" in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------------------------------- phase B
# Issue #13 points 2 and 3 belonged to the inference driver rewritten in issue #10 (phase B), and a finished
# training kept for other options to speechattn-train (speechattn/training/experiment.py): all pass now.


def test_phase_b_inference_reruns_for_other_utterances_of_the_same_count(phone_exp: Path, tmp_path: Path,
                                                                         cli) -> None:
    out = tmp_path / "out"
    first, _ = wav_dir(tmp_path / "a", ["a1", "a2", "a3"])
    assert cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={first}", f"output_dir={out}")[0] == 0
    second, _ = wav_dir(tmp_path / "b", ["b1", "b2", "b3"], seed=8)
    status, _ = cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={second}", f"output_dir={out}")
    assert status == 0 and list(read_table_lists(out / "frames.txt", check_sorted=False)) == ["b1", "b2", "b3"]


def test_phase_b_inference_reruns_for_another_model(corpus: Path, phone_exp: Path, tmp_path: Path, cli) -> None:
    other = make_phone_exp(tmp_path / "other_exp", corpus, constant_label=3)  # every frame "IY"
    data, _ = wav_dir(tmp_path, ["u1", "u2"])
    out = tmp_path / "out"
    assert cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={data}", f"output_dir={out}")[0] == 0
    assert any(label != "IY" for labels in read_table_lists(out / "frames.txt", check_sorted=False).values()
               for label in labels)  # so the second run cannot pass by accident
    status, stderr = cli("infer", "task=phone", f"exp_dir={other}", f"data_dir={data}", f"output_dir={out}")
    if status != 0:  # refusing with a clear message (overwrite=true to redo) is the other accepted behaviour
        assert_one_line_error(status, stderr, str(out))
        return
    frames = read_table_lists(out / "frames.txt", check_sorted=False)
    assert all(label == "IY" for labels in frames.values() for label in labels)


def test_phase_b_temporary_files_are_cleaned_on_the_next_run(phone_exp: Path, tmp_path: Path, cli) -> None:
    data, _ = wav_dir(tmp_path, ["u1"])
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".frames.txt.k3j2h1.tmp"  # what an interrupted run leaves behind
    leftover.write_text("u1 SIL\n")
    assert cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={data}", f"output_dir={out}")[0] == 0
    assert not list(out.glob(".*.tmp"))


def _segmented_dir(root: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(11)
    audio = np.concatenate([synth_utterance(rng)[0] for _ in range(4)])
    sf.write(root / "reco.wav", audio, 16000)
    data = root / "data"
    write_table(data / "wav.scp", {"reco": str(root / "reco.wav")})
    write_lines(data / "segments", "seg1 reco 0.10 0.90", "seg2 reco 1.00 1.80")
    return data, audio


def test_phase_b_phone_inference_honours_segments(phone_exp: Path, tmp_path: Path, cli) -> None:
    from speechattn.tasks.phone_predictor import PhoneLabeler

    data, audio = _segmented_dir(tmp_path)
    out = tmp_path / "out"
    assert cli("infer", "task=phone", f"exp_dir={phone_exp}", f"data_dir={data}", f"output_dir={out}")[0] == 0
    frames = read_table_lists(out / "frames.txt", check_sorted=False)
    labeler = PhoneLabeler.from_exp_dir(phone_exp)
    assert list(frames) == ["seg1", "seg2"]
    for utt, (start, end) in {"seg1": (0.10, 0.90), "seg2": (1.00, 1.80)}.items():
        cut = torch.from_numpy(audio[round(start * 16000):round(end * 16000)])
        assert frames[utt] == labeler.label_waveform(cut, utt)  # equal to inference on the cut audio


def test_phase_b_speaker_inference_honours_segments(sid_exp: Path, tmp_path: Path, cli) -> None:
    data, _ = _segmented_dir(tmp_path)
    out = tmp_path / "out"
    assert cli("infer", "task=sid", f"exp_dir={sid_exp}", f"data_dir={data}", f"output_dir={out}")[0] == 0
    assert list(read_table(out / "predictions.txt", check_sorted=False)) == ["seg1", "seg2"]


def test_finished_training_is_not_kept_for_other_options(corpus: Path, tmp_path: Path, cli) -> None:
    exp = tmp_path / "exp"
    assert cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=1")[0] == 0
    status, stderr = cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=1",
                         "model.hidden_dim=16")
    assert_one_line_error(status, stderr, str(exp))
    assert "model.hidden_dim" in stderr and "force=true" in stderr
    assert load_checkpoint(exp / "model.pt")["config"]["model"]["hidden_dim"] != 16  # kept, not overwritten
    assert "hidden_dim: 16" not in (exp / "config.yaml").read_text()  # config.yaml still describes model.pt
    # The same options (thread count aside) resume/skip; force=true retrains with the new ones.
    assert cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=1",
               "trainer.threads=2")[0] == 0
    assert cli("train", *phone_overrides(corpus, exp, "mlp_context"), "trainer.max_epochs=1",
               "model.hidden_dim=16", "force=true")[0] == 0
    assert load_checkpoint(exp / "model.pt")["config"]["model"]["hidden_dim"] == 16
