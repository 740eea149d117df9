"""Compression recipes: the config check names the key of every bad step, and good recipes come back normalised."""

import pytest

from moelab.compress.recipe import blocks_dropped, check_recipes, check_step


def section(**recipes):
    return {"recipe": next(iter(recipes)), "recipes": recipes}


def test_good_recipes_come_back_in_order():
    steps = [
        {"method": "expert_drop", "keep": 6},
        {"method": "block_drop", "n_drop": 2},
        {"method": "lora_recovery", "steps": 5, "lr": 1e-4, "target_modules": ["q_proj", "down_proj"]},
        {"method": "awq", "bits": 4},
    ]
    out = check_recipes(
        {**section(combo=steps, wanda=[{"method": "wanda", "pattern": "2:4"}]), "methods": ["wanda"]}
    )
    assert out == {"combo": steps, "wanda": [{"method": "wanda", "pattern": "2:4"}]}
    assert blocks_dropped(out["combo"]) == 2 and blocks_dropped(out["wanda"]) == 0


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"method": "prune"}, r"r\[0\]\.method='prune' is not a compression method"),
        ({"keep": 6}, r"r\[0\] must be a mapping with a method"),
        ({"method": "block_drop"}, r"r\[0\]\.n_drop is required by block_drop"),
        ({"method": "block_drop", "n_drop": -1}, r"r\[0\]\.n_drop=-1 must be an integer >= 0"),
        (
            {"method": "block_drop", "n_drop": 2, "mode": "windowed"},
            r"r\[0\]\.mode='windowed' must be one of",
        ),
        ({"method": "expert_drop", "keep": 0}, r"r\[0\]\.keep=0 must be an integer >= 1"),
        ({"method": "wanda", "sparsity": 1.0}, r"r\[0\]\.sparsity=1\.0 must be a fraction in \[0, 1\)"),
        ({"method": "wanda", "pattern": "4:2"}, r"r\[0\]\.pattern='4:2' must be N:M with 0 < N < M"),
        ({"method": "wanda", "pattern": "2-4"}, r"r\[0\]\.pattern='2-4' must be 'unstructured' or 'N:M'"),
        (
            {"method": "sparsegpt", "sparsity": 0.5, "pattern": "2:4"},
            r"r\[0\]: sparsegpt takes a sparsity .* exactly one",
        ),
        ({"method": "magnitude"}, r"exactly one, got neither"),
        ({"method": "gptq", "bits": 16}, r"r\[0\]\.bits=16 must be an integer in \[2, 8\]"),
        (
            {"method": "rtn", "bits": 4, "desc_act": True},
            r"r\[0\]\.desc_act: rtn takes no parameter 'desc_act'",
        ),
        (
            {"method": "magnitude", "sparsity": 0.5, "unrouted": "skip"},
            r"magnitude takes no parameter 'unrouted'",
        ),
        ({"method": "lora_recovery", "r": 0}, r"r\[0\]\.r=0 must be an integer >= 1"),
        ({"method": "lora_recovery", "lr": 0.0}, r"r\[0\]\.lr=0\.0 must be a number > 0"),
        ({"method": "lora_recovery", "lr": True}, r"r\[0\]\.lr=True must be a number > 0"),
        (
            {"method": "lora_recovery", "target_modules": ["gate"]},
            r"r\[0\]\.target_modules=\['gate'\] must be a non-empty list of distinct names .* unknown: \['gate'\]",
        ),
        (
            {"method": "lora_recovery", "target_modules": ["q_proj", "q_proj"]},
            r"r\[0\]\.target_modules=.* must be a non-empty list of distinct names",
        ),
        ({"method": "lora_recovery", "heldout_sequences": 0}, r"r\[0\]\.heldout_sequences=0 must be"),
    ],
)
def test_bad_steps_name_the_key(step, message):
    with pytest.raises(ValueError, match=message):
        check_step(step, "compress.recipes.r[0]")


def test_bad_recipe_sections_name_the_key():
    good = [{"method": "rtn", "bits": 8}]
    with pytest.raises(ValueError, match=r"compress\.recipe='missing' names no recipe"):
        check_recipes({"recipe": "missing", "recipes": {"a": good}})
    with pytest.raises(ValueError, match=r"compress\.methods names 'b', not a recipe"):
        check_recipes({**section(a=good), "methods": ["b"]})
    with pytest.raises(ValueError, match=r"compress\.recipes\.a must be a non-empty list"):
        check_recipes(section(a=[]))
    with pytest.raises(ValueError, match=r"compress\.recipes\.a/b: a recipe name is letters"):
        check_recipes(section(**{"a/b": good}))
    with pytest.raises(ValueError, match=r"compress\.recipes\.speed: the name is reserved"):
        check_recipes(section(speed=good))
