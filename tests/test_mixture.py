"""Data-mixture strategies (moelab.mixture): hand-computed Sheared-LLaMA updates, the simplex floor, state
round trips, and bad specs named."""

import math
import sys

import pytest

from moelab.mixture import (
    ShearedLlama,
    ShearedLlamaPaper,
    StaticMixture,
    check_mixture_spec,
    initial_weights,
    make_mixture,
    proportional_weights,
)

DOMAINS = ["a", "b", "c"]
A0 = {"a": 0.5, "b": 0.3, "c": 0.2}
LOSS = {"a": 2.0, "b": 3.0, "c": 1.0}
REF = {"a": 2.5, "b": 2.0, "c": 0.5}  # D = l - l_ref = (-0.5, 1.0, 0.5)


def round_(step, losses=LOSS, reference=REF):
    return {"step": step, "losses": losses, "reference": reference}


def test_sheared_llama_one_round_by_hand():
    # log a + D = (ln .5 - .5, ln .3 + 1, ln .2 + .5); exp: .5 e^-.5 = .303265, .3 e = .815485, .2 e^.5 = .329744
    s = 0.303265 + 0.815485 + 0.329744
    soft = {"a": 0.303265 / s, "b": 0.815485 / s, "c": 0.329744 / s}  # .209366 .562986 .227648
    c = 1e-4
    want = {d: (1 - c) * soft[d] + c / 3 for d in DOMAINS}
    got = ShearedLlama(DOMAINS, A0).update(round_(10))
    assert got == pytest.approx(want, abs=2e-6)
    assert got["b"] == pytest.approx(0.56296, abs=1e-4)


def test_sheared_llama_paper_one_round_by_hand():
    # D = max(0, l - l_ref) = (0, 1, .5): a ~ (.5, .3 e, .2 e^.5) = (.5, .815485, .329744)
    s = 0.5 + 0.815485 + 0.329744
    got = ShearedLlamaPaper(DOMAINS, A0).update(round_(10))
    assert got == pytest.approx({"a": 0.5 / s, "b": 0.815485 / s, "c": 0.329744 / s}, abs=2e-6)


def test_ten_rounds_match_the_closed_form():
    # with fixed losses and no smoothing, ten softmax steps = one with 10 eta D; the paper variant ~ a exp(10 D+)
    mix, paper = ShearedLlama(DOMAINS, A0, eta=1.0, smoothing=0.0), ShearedLlamaPaper(DOMAINS, A0)
    for step in range(1, 11):
        mix.update(round_(step))
        paper.update(round_(step))
    d = {k: LOSS[k] - REF[k] for k in DOMAINS}
    z = {k: A0[k] * math.exp(10 * d[k]) for k in DOMAINS}
    zp = {k: A0[k] * math.exp(10 * max(0.0, d[k])) for k in DOMAINS}
    assert mix.weights == pytest.approx({k: v / sum(z.values()) for k, v in z.items()}, rel=1e-9)
    assert paper.weights == pytest.approx({k: v / sum(zp.values()) for k, v in zp.items()}, rel=1e-9)
    assert [h["step"] for h in mix.history] == list(range(11))  # the initial weights, then one per round


def test_ten_rounds_with_smoothing_stay_on_the_simplex_above_the_floor():
    mix = ShearedLlama(DOMAINS, A0, eta=5.0, smoothing=1e-2)
    floor = 1e-2 / 3
    for step in range(1, 11):
        w = mix.update(round_(step, reference={"a": 50.0, "b": 0.0, "c": 0.0}))
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)
        assert min(w.values()) >= floor * (1 - 1e-9)
    assert mix.weights["a"] == pytest.approx(floor, rel=1e-6)  # l_a << l_ref,a: a sits on the floor


def test_a_static_mixture_keeps_its_weights_and_records_no_rounds():
    mix = StaticMixture(DOMAINS, {"a": 2, "b": 1, "c": 1})
    assert mix.update(round_(10)) == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert len(mix.history) == 1


def test_state_round_trip_continues_identically():
    one, two = ShearedLlama(DOMAINS, A0), ShearedLlama(DOMAINS, {"a": 1, "b": 1, "c": 1})
    one.update(round_(1))
    two.load_state_dict(one.state_dict())
    assert two.update(round_(2)) == one.update(round_(2)) and two.history == one.history
    with pytest.raises(ValueError, match="strategy 'sheared_llama'.*'sheared_llama_paper'"):
        ShearedLlamaPaper(DOMAINS, A0).load_state_dict(one.state_dict())


def test_initial_weights_uniform_proportional_and_given():
    assert initial_weights({"init": "uniform"}, A0) == pytest.approx({d: 1 / 3 for d in DOMAINS})
    sizes = {"a": 600, "b": 300, "c": 100}
    assert initial_weights({"init": "proportional"}, A0, sizes) == {"a": 0.6, "b": 0.3, "c": 0.1}
    assert proportional_weights(sizes) == {"a": 0.6, "b": 0.3, "c": 0.1}
    assert make_mixture({}, {"a": 3, "b": 1, "c": 0}).weights == {"a": 0.75, "b": 0.25, "c": 0.0}


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"strategy": "doremi"}, r"pretrain.mixture.strategy='doremi' is not one of"),
        ({"init": "random"}, r"pretrain.mixture.init='random'"),
        ({"strategy": "sheared_llama", "eta": -1}, r"pretrain.mixture.eta must be >= 0"),
        ({"smoothing": 2}, r"pretrain.mixture.smoothing must be in \[0, 1\]"),
        ({"eval_interval": 0}, r"pretrain.mixture.eval_interval must be >= 1"),
        ({"reference_loss": {"a": 1, "b": 1}}, r"reference_loss has no value for domain 'c'"),
        ({"reference_loss": {"a": 1, "b": 1, "c": 1, "z": 1}}, r"reference_loss names 'z'"),
        ({"temperature": 1}, r"unknown key 'temperature'"),
    ],
)
def test_bad_specs_name_the_key(spec, match):
    with pytest.raises(ValueError, match=match):
        check_mixture_spec(spec, DOMAINS)


def test_bad_weights_name_the_domain():
    with pytest.raises(ValueError, match="unknown domain 'z'"):
        StaticMixture(DOMAINS, {**A0, "z": 1})
    with pytest.raises(ValueError, match=r"mixture state covers \['a', 'z'\]"):
        make_mixture({}, A0).load_state_dict(
            {"strategy": "static", "weights": {"a": 1, "z": 1}, "history": []}
        )
    with pytest.raises(ValueError, match=r"weights of \['b'\] must be finite and non-negative"):
        StaticMixture(DOMAINS, {"a": 1, "b": -1, "c": 1})
    with pytest.raises(ValueError, match="round reference lack source 'c'"):
        ShearedLlama(DOMAINS, A0).update(round_(1, reference={"a": 1, "b": 1}))


def test_the_strategies_import_no_torch():
    import subprocess

    code = "import sys; from moelab.mixture import make_mixture; make_mixture({}, {'a': 1}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
