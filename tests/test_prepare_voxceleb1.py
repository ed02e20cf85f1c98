"""local/prepare_voxceleb1.py on a VoxCeleb1-layout fixture re-laid from speechocean762."""
from __future__ import annotations

import logging
import shutil

import pytest

from corpus_layouts import load_script, needs_shared, source
from speechattn.data.kaldi_dir import read_table, validate_data_dir
from speechattn.data.trials import read_trials

pytestmark = needs_shared
prepare = load_script("prepare_voxceleb1")


@pytest.fixture(scope="module")
def vox(tmp_path_factory):
    """6 + 6 speakers x 10 utterances; the first 2 of speechocean762's test/ speakers form the trial part."""
    from corpus_fixtures.voxceleb1 import make_voxceleb1_fixture
    root = tmp_path_factory.mktemp("vox") / "voxceleb1"
    counts = make_voxceleb1_fixture(source(), root, train_speakers=6, test_speakers=6, test_part_speakers=2)
    return root, counts


def run(corpus, out, *extra):
    return prepare.main(["--corpus-dir", str(corpus), "--out-dir", str(out), "--nj", "1", *extra])


def speakers(data_dir):
    return set(read_table(data_dir / "utt2spk").values())


def test_identification_and_verification_dirs(vox, tmp_path):
    corpus, counts = vox
    assert run(corpus, tmp_path / "data") == 0
    data = tmp_path / "data"
    for name in prepare.DATA_DIRS:
        validate_data_dir(data / name)
    # iden split: whole videos held out, 8 / 1 / 1 per speaker, every speaker in every set (closed set)
    sizes = {name: len(read_table(data / name / "wav.scp")) for name in ("ident_train", "ident_dev", "ident_test")}
    assert sizes == {"ident_train": 96, "ident_dev": 12, "ident_test": 12}
    assert (data / "ident_train" / "speakers.txt").read_text().split() == sorted(speakers(data / "ident_train"))
    assert speakers(data / "ident_test") == speakers(data / "ident_train")
    split = {line.split()[1]: line.split()[0] for line in (corpus / "iden_split.txt").read_text().splitlines()}
    for utt in read_table(data / "ident_test" / "wav.scp"):
        speaker, rest = utt.split("-", 1)      # video IDs may contain "-" themselves
        video, number = rest.rsplit("-", 1)
        assert split[f"{speaker}/{video}/{number}.wav"] == "3"
    # verification: trained on the speakers of no trial; tested on the trial list's files
    trials = read_trials(data / "verif_test" / "trials")
    trial_speakers = {u.split("-")[0] for t in trials for u in (t.utt1, t.utt2)}
    assert len(trial_speakers) == 2 and not trial_speakers & speakers(data / "verif_train")
    assert speakers(data / "verif_train") | trial_speakers == speakers(data / "ident_train")
    assert speakers(data / "verif_dev") == speakers(data / "verif_train")
    assert len(trials) == counts["target_trials"] + counts["nontarget_trials"]
    original = (corpus / "veri_test2.txt").read_text().splitlines()
    first_label, first_enrol, first_test = original[0].split()
    assert (int(trials[0].target), trials[0].utt1, trials[0].utt2) == \
        (int(first_label), first_enrol[:-4].replace("/", "-"), first_test[:-4].replace("/", "-"))
    assert set(read_table(data / "verif_test" / "wav.scp")) == {u for t in trials for u in (t.utt1, t.utt2)}
    assert set(read_table(data / "ident_train" / "spk2gender").values()) <= {"m", "f"}
    frames = read_table(data / "ident_dev" / "utt2num_frames")
    assert all(int(n) > 50 for n in frames.values())


def test_second_run_does_nothing(vox, tmp_path, caplog):
    corpus, _ = vox
    assert run(corpus, tmp_path / "data") == 0
    with caplog.at_level(logging.INFO):
        assert run(corpus, tmp_path / "data") == 0
    assert "up to date, nothing to do" in caplog.text


@pytest.fixture
def copy(vox, tmp_path):
    corpus, _ = vox
    shutil.copytree(corpus, tmp_path / "vox")
    return tmp_path / "vox"


def test_trial_naming_a_missing_file(copy, tmp_path, caplog):
    lines = (copy / "veri_test2.txt").read_text().splitlines()
    label, enrol, test = lines[6].split()
    lines[6] = f"{label} {enrol} {test.replace('.wav', '9.wav')}"
    (copy / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data") == 1
    assert f"{copy / 'veri_test2.txt'}:7: file '{test.replace('.wav', '9.wav')}' does not exist under" in caplog.text


def test_iden_split_with_an_unknown_set_number(copy, tmp_path, caplog):
    lines = (copy / "iden_split.txt").read_text().splitlines()
    lines[10] = "4 " + lines[10].split()[1]
    (copy / "iden_split.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data") == 1
    assert f"{copy / 'iden_split.txt'}:11: unknown set number '4' (1 = train, 2 = val, 3 = test)" in caplog.text


def test_trial_label_contradicting_the_speakers(copy, tmp_path, caplog):
    lines = (copy / "veri_test2.txt").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("0 "))
    lines[index] = "1 " + lines[index][2:]
    (copy / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR):
        assert run(copy, tmp_path / "data") == 1
    assert f"veri_test2.txt:{index + 1}: label 1 contradicts the speaker IDs" in caplog.text


def test_without_meta_and_with_stray_files(copy, tmp_path):
    (copy / "vox1_meta.csv").unlink()
    (copy / "wav" / "README").write_text("not audio\n")
    assert run(copy, tmp_path / "data") == 0
    assert not (tmp_path / "data" / "ident_train" / "spk2gender").exists()
