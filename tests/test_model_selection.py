"""Model selection by a task metric (training/selection.py), checkpoint averaging (training/average.py),
speaker dev metrics (training/speaker_validation.py) and held-back dev speakers (data/dev_trials.py)."""
from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import speechattn.data.dev_trials
import speechattn.training.average
import speechattn.training.selection
import speechattn.training.speaker_validation
from speechattn.data.dev_trials import dev_trials, held_out_speaker_count, hold_out_speakers, limit_utterances
from speechattn.metrics.verification import compute_eer
from speechattn.training.average import average_best, average_checkpoints, average_state_dicts
from speechattn.utils.checkpoint import load_checkpoint, save_checkpoint
from speechattn.training.selection import ModelSelector
from speechattn.training.speaker_validation import IdentificationTop1, VerificationEER, embed_utterances


@pytest.mark.parametrize("module", [speechattn.training.selection, speechattn.training.average,
                                    speechattn.training.speaker_validation, speechattn.data.dev_trials])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------- selector

def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), value), "bn.num_batches_tracked": torch.tensor(int(value * 10))}


def test_selector_keeps_the_best_epochs_weights_on_disk(tmp_path: Path) -> None:
    best = tmp_path / "best"
    selector = ModelSelector("dev_eer", mode="min", keep=2, directory=best)
    eers = {1: 6.0, 2: 4.0, 3: 5.0, 4: 3.5, 5: 4.0}
    improved = [selector.update(e, v, lambda e=e: _weights(float(e))) for e, v in eers.items()]
    assert improved == [True, True, False, True, False]
    assert selector.best_epoch == 4 and selector.best_value == 3.5
    # a file that drops out is deleted at the next update (or prune()), once the checkpoint that ranks it out exists
    assert sorted(p.name for p in best.glob("*.pt")) == ["epoch-2.pt", "epoch-4.pt"]  # 5 ties 2: earlier wins
    selector.update(6, 3.0, _weights(6.0))
    assert sorted(p.name for p in best.glob("*.pt")) == ["epoch-2.pt", "epoch-4.pt", "epoch-6.pt"]
    selector.prune()  # what the loop calls after saving the epoch's checkpoint
    assert sorted(p.name for p in best.glob("*.pt")) == ["epoch-4.pt", "epoch-6.pt"]
    index = json.loads((best / "best.json").read_text())
    assert [r["epoch"] for r in index["best"]] == [6, 4] and index["best"][1]["dev_eer"] == 3.5
    assert torch.equal(load_checkpoint(best / "epoch-4.pt")["model"]["w"], torch.full((2, 2), 4.0))


def test_selector_max_mode_nan_and_weights_only_when_needed(tmp_path: Path) -> None:
    calls = []
    selector = ModelSelector("dev_top1", mode="max", keep=1, directory=tmp_path)

    def weights():
        calls.append(1)
        return _weights(0.0)

    assert selector.update(1, math.nan, weights) is False  # a failed metric never becomes the best
    assert selector.update(2, 90.0, weights) and not selector.update(3, 89.0, weights)
    assert selector.update(4, 91.0, weights) and selector.ranking()[-1][0] == 1
    assert len(calls) == 2  # epochs 2 and 4 entered the top 1; 1 (NaN ranks last) and 3 did not


def test_selector_state_round_trip_removes_files_written_after_the_checkpoint(tmp_path: Path) -> None:
    selector = ModelSelector("dev_eer", mode="min", keep=2, directory=tmp_path)
    for epoch, eer in ((1, 5.0), (2, 4.0)):
        selector.update(epoch, eer, _weights(epoch))
    state = json.loads(json.dumps(selector.state_dict()))  # plain data (goes into the training checkpoint)
    selector.update(3, 3.0, _weights(3))  # written, then the run is killed before its checkpoint
    resumed = ModelSelector("dev_eer", mode="min", keep=2, directory=tmp_path)
    resumed.load_state_dict(state)
    assert resumed.best_epoch == 2 and sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch-1.pt", "epoch-2.pt"]
    with pytest.raises(ValueError, match="start a new experiment directory"):
        ModelSelector("dev_top1", mode="max").load_state_dict(state)
    with pytest.raises(ValueError, match="mode must be"):
        ModelSelector("x", mode="best")


# ---------------------------------------------------------------------------------------------- averaging

def test_average_state_dicts_floats_and_integer_buffers() -> None:
    states = [_weights(1.0), _weights(2.0), _weights(4.0)]
    avg = average_state_dicts(states)
    assert torch.allclose(avg["w"], torch.full((2, 2), 7.0 / 3.0))
    assert avg["bn.num_batches_tracked"].item() == 23 and avg["bn.num_batches_tracked"].dtype == torch.int64
    half = average_state_dicts([{"w": torch.ones(2, dtype=torch.float16)}, {"w": torch.zeros(2, dtype=torch.float16)}])
    assert half["w"].dtype == torch.float16 and half["w"].tolist() == [0.5, 0.5]


def test_average_refuses_different_models_naming_the_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.zeros(2)}})
    save_checkpoint(tmp_path / "b.pt", {"model": {"w": torch.zeros(3)}})
    save_checkpoint(tmp_path / "c.pt", {"model": {"v": torch.zeros(2)}})
    with pytest.raises(ValueError, match=r"b.pt: 'w' is \(3,\)"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(ValueError, match=r"c.pt: parameters differ"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(KeyError, match="no 'model' entry"):
        save_checkpoint(tmp_path / "d.pt", {"weights": {}})
        average_checkpoints([tmp_path / "d.pt"])


def test_average_best_of_a_trained_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    selector = ModelSelector("dev_eer", mode="min", keep=3, directory=tmp_path / "best")
    snapshots = {}
    for epoch, eer in enumerate([9.0, 7.0, 8.0, 6.0, 6.5], start=1):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        selector.update(epoch, eer, model.state_dict)
    weights, epochs = average_best(tmp_path / "best", 3, output=tmp_path / "model_avg.pt", extra={"speakers": ["a"]})
    assert epochs == [4, 5, 2]
    expected = (snapshots[2]["0.weight"] + snapshots[4]["0.weight"] + snapshots[5]["0.weight"]) / 3
    assert torch.allclose(weights["0.weight"], expected, atol=1e-6)
    saved = load_checkpoint(tmp_path / "model_avg.pt")
    assert saved["averaged_epochs"] == [4, 5, 2] and saved["speakers"] == ["a"]
    model.load_state_dict(saved["model"])  # loads into the same architecture
    with pytest.raises(ValueError, match="3 epochs kept, cannot average the best 4"):
        average_best(tmp_path / "best", 4)
    with pytest.raises(FileNotFoundError, match="best.json"):
        average_best(tmp_path, 2)


# ---------------------------------------------------------------------------------------------- speaker dev metrics

class ToySpeakerModel(torch.nn.Module):
    """The protocol the dev metrics need (``forward(x, lengths) -> (B, E)``, ``logits``): a frame MLP,
    masked mean pooling (padding must not change an utterance's embedding) and a linear head. Kept local:
    the toolkit's speaker model is moving to the task interface (#10)."""

    def __init__(self, num_speakers: int = 3, dim: int = 10, embed_dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.frames = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, embed_dim))
        self.norm = torch.nn.BatchNorm1d(embed_dim)  # behaves differently in train and eval mode
        self.head = torch.nn.Linear(embed_dim, num_speakers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = (torch.arange(x.size(1))[None, :] < lengths[:, None]).unsqueeze(-1)
        h = self.frames(x) * valid
        return self.norm(h.sum(1) / lengths[:, None])

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)


def _tiny_model(num_speakers: int = 3) -> torch.nn.Module:
    return ToySpeakerModel(num_speakers)


def _feats(seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {f"s{s}-u{k}": torch.from_numpy((rng.standard_normal((int(rng.integers(20, 90)), 10)) + s)
                                           .astype(np.float32)) for s in range(3) for k in range(3)}


def test_batched_embeddings_equal_single_utterances_and_mode_is_restored() -> None:
    model, feats = _tiny_model(), _feats()
    model.train()
    batched, _ = embed_utterances(model, feats, max_frames_per_batch=200)
    assert model.training
    model.eval()
    with torch.no_grad():
        for utt, f in feats.items():
            single = model(f[None], torch.tensor([len(f)]))[0].double().numpy()
            assert np.allclose(batched[utt], single, atol=1e-5)


def test_verification_eer_equals_the_metric_on_the_embeddings() -> None:
    model, feats = _tiny_model(), _feats()
    utt2spk = {u: u.split("-")[0] for u in feats}
    trials = dev_trials({s: [u for u in feats if utt2spk[u] == s] for s in ("s0", "s1", "s2")})
    result = VerificationEER(feats, trials)(model)
    embeddings, _ = embed_utterances(model, feats)
    unit = {u: e / np.linalg.norm(e) for u, e in embeddings.items()}
    scores = np.array([unit[a] @ unit[b] for _, a, b in trials])
    labels = np.array([t[0] for t in trials], dtype=bool)
    assert result["dev_eer"] == pytest.approx(100 * compute_eer(scores[labels], scores[~labels])[0])
    assert 0.0 <= result["dev_min_dcf"]
    with pytest.raises(ValueError, match="target and non-target"):
        VerificationEER(feats, [t for t in trials if t[0] == 1])
    with pytest.raises(KeyError, match="without features"):
        VerificationEER(feats, trials + [(0, "s0-u0", "ghost")])


def test_identification_top1_counts_only_original_speed_classes() -> None:
    model, feats = _tiny_model(num_speakers=9), _feats()  # 3 speakers x 3 speeds as new speakers
    with torch.no_grad():
        model.head.bias[3:] += 100.0  # the perturbed-speed classes win every argmax over all 9
    targets = {u: int(u[1]) for u in feats}
    _, logits = embed_utterances(model, feats, with_logits=True)
    restricted = 100 * np.mean([int(np.argmax(logits[u][:3])) == t for u, t in targets.items()])
    full = 100 * np.mean([int(np.argmax(logits[u])) == t for u, t in targets.items()])
    assert IdentificationTop1(feats, targets, num_speakers=3)(model)["dev_top1"] == pytest.approx(restricted)
    assert IdentificationTop1(feats, targets)(model)["dev_top1"] == pytest.approx(full) == 0.0
    assert restricted > 0.0


# ---------------------------------------------------------------------------------------------- dev speakers

def test_held_back_speakers_do_not_depend_on_order_and_trials_cover_all_pairs() -> None:
    spk2utt = {f"spk{i:03d}": [f"spk{i:03d}-{j}" for j in range(10)] for i in range(125)}
    count = held_out_speaker_count(len(spk2utt))
    assert count == 13
    train, held = hold_out_speakers(spk2utt, count, seed=1)
    _, held_reversed = hold_out_speakers(dict(reversed(list(spk2utt.items()))), count, seed=1)
    assert sorted(held) == sorted(held_reversed) and len(train) == 112 and not set(train) & set(held)
    assert sorted(hold_out_speakers(spk2utt, count, seed=2)[1]) != sorted(held)
    trials = dev_trials(held)
    assert len(trials) == 130 * 129 // 2 and sum(t[0] for t in trials) == 13 * 45
    assert len(dev_trials(held, nontarget_ratio=2.0)) == 3 * 13 * 45
    with pytest.raises(ValueError, match="cannot hold back"):
        hold_out_speakers(spk2utt, 125)
    with pytest.raises(ValueError, match="need more than 2 speakers"):
        held_out_speaker_count(2)


def test_dev_utterances_per_speaker_are_bounded_seeded_and_order_independent() -> None:
    spk2utt = {f"spk{i:03d}": [f"spk{i:03d}-{j:03d}" for j in range(123)] for i in range(12)}
    limited = limit_utterances(spk2utt, 10, seed=1)
    assert all(len(u) == 10 and set(u) <= set(spk2utt[s]) for s, u in limited.items())
    reversed_input = {s: list(reversed(u)) for s, u in reversed(list(spk2utt.items()))}
    assert {s: sorted(u) for s, u in limit_utterances(reversed_input, 10, seed=1).items()} == \
        {s: sorted(u) for s, u in limited.items()}
    assert limit_utterances(spk2utt, 10, seed=2) != limited
    assert limit_utterances(spk2utt, 0) == spk2utt and limit_utterances({"a": ["x"]}, 10) == {"a": ["x"]}
    trials = dev_trials(limited)
    assert len(trials) == 120 * 119 // 2 and sum(t[0] for t in trials) == 12 * 45
    with pytest.raises(ValueError, match="per_speaker"):
        limit_utterances(spk2utt, -1)
