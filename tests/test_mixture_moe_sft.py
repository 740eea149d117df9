"""MoE-SFT's dynamic mixture and its baselines (moelab.mixture.moe_sft) against hand-computed examples."""

import json
import math

import pytest

from moelab.mixture.moe_sft import (
    Cycle,
    MoESFTDynamic,
    MoESFTInverse,
    RandomBatch,
    RandomWeights,
    inverse_ranks,
    redundancy,
)

SETS = ["code", "math", "orca", "sharegpt"]
UNIFORM = dict.fromkeys(SETS, 0.25)
# 2 experts: code and math route alike, orca the other way, sharegpt half and half (counts, not normalised)
LOADS = {"code": [10, 0], "math": [3, 0], "orca": [0, 7], "sharegpt": [4, 4]}
S = math.sqrt(0.5)  # ||(1, 0) - (.5, .5)||
# delta_i = mean over all 4 j (self included) of the L2 distances, by hand:
#   code: (0 + 0 + sqrt2 + S) / 4 = 3S/4, math: the same, orca: (sqrt2 + sqrt2 + 0 + S) / 4 = 5S/4, sharegpt: 3S/4
DELTA = {"code": 3 * S / 4, "math": 3 * S / 4, "orca": 5 * S / 4, "sharegpt": 3 * S / 4}


def step_by_hand(w, delta, eta=10.0, c=0.05):
    """a = softmax(log w + eta delta); w = (1 - c) a + c / N (MoE-SFT Sec. 3), written out."""
    z = {k: math.exp(math.log(w[k]) + eta * delta[k]) for k in w}
    a = {k: z[k] / sum(z.values()) for k in w}
    return {k: (1 - c) * a[k] + c / len(w) for k in w}


def test_redundancy_l2_and_cosine_by_hand():
    assert redundancy(LOADS) == pytest.approx(DELTA)
    # cosine: 1 - cos; cos(code, orca) = 0, cos(code, sharegpt) = S
    cos = redundancy(LOADS, "cosine")
    assert cos == pytest.approx(
        {
            "code": (1 + (1 - S)) / 4,
            "math": (1 + (1 - S)) / 4,
            "orca": (1 + 1 + (1 - S)) / 4,
            "sharegpt": 3 * (1 - S) / 4,
        }
    )


def test_one_round_from_uniform():
    """exp(10 * (5S/4 - 3S/4)) = exp(5S) = 34.30: orca gets 0.95 * 34.30 / 37.30 + 0.0125 = 0.8861."""
    mix = MoESFTDynamic(SETS, UNIFORM)
    got = mix.update({"step": 100, "gate_loads": LOADS})
    assert got == pytest.approx(step_by_hand(UNIFORM, DELTA))
    assert got["orca"] == pytest.approx(0.95 * math.exp(5 * S) / (3 + math.exp(5 * S)) + 0.0125)
    assert got["orca"] == pytest.approx(0.8861, abs=1e-4) and got["code"] == pytest.approx(0.0380, abs=1e-4)
    assert mix.history == [{"step": 0, "weights": UNIFORM}, {"step": 100, "weights": got}]
    assert mix.last_delta == pytest.approx(DELTA)


def test_ten_rounds_stay_on_the_simplex_above_the_floor():
    mix, w = MoESFTDynamic(SETS, UNIFORM), dict(UNIFORM)
    for step in range(1, 11):
        got = mix.update({"step": 100 * step, "gate_loads": LOADS})
        w = step_by_hand(w, DELTA)
        assert got == pytest.approx(w)
        assert sum(got.values()) == pytest.approx(1.0)
        assert min(got.values()) >= 0.05 / 4 - 1e-12  # the c/N floor
    assert got["orca"] > 0.95 and got["code"] == pytest.approx(got["math"]) == pytest.approx(got["sharegpt"])


def test_inverse_hypothesis_reverses_the_ranks():
    assert inverse_ranks({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 3.0, "b": 1.0, "c": 2.0}
    # ties by name: code, math, sharegpt (3S/4) then orca (5S/4) -> code gets 5S/4, the rest 3S/4
    flipped = {"code": 5 * S / 4, "math": 3 * S / 4, "orca": 3 * S / 4, "sharegpt": 3 * S / 4}
    assert inverse_ranks(DELTA) == pytest.approx(flipped)
    got = MoESFTInverse(SETS, UNIFORM).update({"step": 1, "gate_loads": LOADS})
    assert got == pytest.approx(step_by_hand(UNIFORM, flipped))
    assert max(got, key=got.get) == "code"


def test_bad_input_names_what_is_wrong():
    with pytest.raises(ValueError, match="round gate_loads lack source 'sharegpt'"):
        MoESFTDynamic(SETS, UNIFORM).update({"step": 1, "gate_loads": {k: LOADS[k] for k in SETS[:3]}})
    with pytest.raises(ValueError, match="eta must be >= 0"):
        MoESFTDynamic(SETS, UNIFORM, eta=-1)
    with pytest.raises(ValueError, match="smoothing must be in"):
        MoESFTDynamic(SETS, UNIFORM, smoothing=1.5)
    with pytest.raises(ValueError, match="distance must be one of"):
        MoESFTDynamic(SETS, UNIFORM, distance="kl")
    with pytest.raises(ValueError, match="different numbers of experts"):
        redundancy({"a": [1, 0], "b": [1, 0, 0]})
    with pytest.raises(ValueError, match="gate load of 'b'.*positive sum"):
        redundancy({"a": [1, 0], "b": [0, 0]})
    with pytest.raises(ValueError, match="unknown domain 'chat'"):
        MoESFTDynamic(SETS, {**UNIFORM, "chat": 0.1})


@pytest.mark.parametrize("cls", [RandomWeights, RandomBatch])
def test_random_baselines_resume_the_same_draws(cls):
    one = cls(SETS, UNIFORM, seed=7)
    for step in (1, 2):
        one.update({"step": step})
    state = json.loads(json.dumps(one.state_dict()))  # what a checkpoint stores
    two = cls(SETS, UNIFORM, seed=999)
    two.load_state_dict(state)
    for step in (3, 4, 5):
        assert two.update({"step": step}) == one.update({"step": step})
    assert two.history == one.history
    assert cls(SETS, UNIFORM, seed=7).update({"step": 1}) == cls(SETS, UNIFORM, seed=7).update({"step": 1})


def test_random_batch_puts_one_set_at_one_and_the_rest_at_1e_5():
    got = RandomBatch(SETS, UNIFORM, seed=3).update({"step": 1})
    top = max(got, key=got.get)
    total = 1.0 + 3e-5
    assert got[top] == pytest.approx(1 / total)
    assert all(got[k] == pytest.approx(1e-5 / total) for k in SETS if k != top)


def test_cycle_rolls_a_one_hot_from_code():
    mix = Cycle(SETS, UNIFORM)
    seen = [max(mix.weights, key=mix.weights.get)]
    for step in range(1, 5):
        w = mix.update({"step": step})
        assert sorted(w.values()) == [0.0, 0.0, 0.0, 1.0]
        seen.append(max(w, key=w.get))
    assert seen == ["code", "math", "orca", "sharegpt", "code"]
