"""Cross-field checks of the workflow config (the JSON schema checks single keys and types)."""

from __future__ import annotations

from moelab.config_keys import check_finite, check_overlays
from moelab.errors import ConfigError
from moelab.model_facts import dense_facts, spec_facts
from moelab.train.config import LauncherConfig


def check_config(cfg: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key when sections of ``cfg`` disagree."""
    ablation_runs(cfg)
    c = cfg["construct"]
    if c["top_k"] > c["num_experts"]:
        raise ConfigError(f"construct.top_k={c['top_k']} exceeds construct.num_experts={c['num_experts']}")
    routed = c["num_experts"] - c.get("num_shared_experts", 0)
    for e in (cfg.get("activated_baseline") or {}).get("experts") or ():
        if not 0 <= e < routed:
            raise ConfigError(
                f"activated_baseline.experts: expert {e} is not a routed expert id in [0, {routed})"
            )
    check_data_source(cfg)
    domains = set(cfg["data"]["pretrain_domains"])
    for key, weight in cfg["pretrain"]["domain_weights"].items():
        if key not in domains and weight != 0:
            raise ConfigError(
                f"pretrain.domain_weights has domain {key!r} that is not in data.pretrain_domains {sorted(domains)}"
                " (weight 0 leaves it out)"
            )
    if sum(train_section(cfg, "pretrain")["domain_weights"].values()) <= 0:
        raise ConfigError("pretrain.domain_weights must have a positive sum")
    sft_domains = set(cfg["data"]["sft_domains"])
    for section in train_sections(cfg)[1:]:
        name = section_name(section)
        for key, weight in raw_section(cfg, section)["domain_weights"].items():
            if key not in sft_domains and weight != 0:
                raise ConfigError(
                    f"{name}.domain_weights has data set {key!r} that is not in data.sft_domains "
                    f"{sorted(sft_domains)} (weight 0 leaves it out)"
                )
        if sum(train_section(cfg, section)["domain_weights"].values()) <= 0:
            raise ConfigError(f"{name}.domain_weights must have a positive sum")
    from moelab.mixture import check_mixture_spec  # torch-free (mixture.strategies)

    try:
        check_mixture_spec(cfg["pretrain"].get("mixture") or {}, sorted(domains))
        for section in train_sections(cfg)[1:]:
            spec = raw_section(cfg, section).get("mixture") or {}
            check_mixture_spec(spec, sorted(sft_domains), where=f"{section_name(section)}.mixture")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    calib = cfg["compress"].get("calib_domain", "web")
    if calib not in domains:
        raise ConfigError(
            f"compress.calib_domain={calib!r} is not in data.pretrain_domains {sorted(domains)}"
        )
    recovery = cfg["compress"].get("recovery_domain")
    if recovery is not None and recovery not in domains:
        raise ConfigError(
            f"compress.recovery_domain={recovery!r} is not in data.pretrain_domains {sorted(domains)}"
        )
    check_launcher(cfg)
    compress_recipes(cfg)
    cpt_ablation_runs(cfg)
    sft_mixture_runs(cfg)
    post_training_runs(cfg)
    m = cfg["model"]
    needed = {"gguf": ("gguf_package", "gguf_file"), "pretrained": ("pretrained",), "tiny": ("tiny",)}[
        m["source"]
    ]
    for key in needed:
        if key not in m:
            raise ConfigError(f"model.source={m['source']!r} needs model.{key}")
    from moelab.evaluate.plan import check_evaluate_config

    check_evaluate_config(cfg["evaluate"])  # papers' tasks exist in the suite, stages name known papers


TRAIN_SECTIONS = ("pretrain", "sft_stage1", "sft")
_NOT_TRAINING = ("base_model", "from_stage", "stage1")  # where a stage starts, not how it trains


def train_sections(cfg: dict) -> list[str]:
    """The training stages of this config, in order: pretrain, [sft_stage1 if sft.stage1 is set,] sft."""
    return [s for s in TRAIN_SECTIONS if s != "sft_stage1" or cfg["sft"].get("stage1")]


def section_name(section: str) -> str:
    """The config key of a training stage, for error messages (sft_stage1 -> sft.stage1)."""
    return "sft.stage1" if section == "sft_stage1" else section


def raw_section(cfg: dict, section: str) -> dict:
    """The config section of training stage ``section`` (one of TRAIN_SECTIONS) as written.

    ``sft_stage1`` is ``sft.stage1`` over the ``sft:`` settings it does not set (two-stage post-training,
    LLaMA-MoE v2 sec. 3: a general stage, then the final ``sft:`` stage).
    """
    if section == "sft_stage1":
        return {**cfg["sft"], **(cfg["sft"].get("stage1") or {})}
    return cfg[section]


def train_section(cfg: dict, section: str) -> dict:
    """The settings of training stage ``section`` (pretrain, sft_stage1, sft) with domain weights of the
    extracted domains only.

    A config merged over another (config/paper.yaml over config.yaml) cannot delete the base's weight keys;
    it sets them to 0, and they are dropped here. A domain without a weight is an error.

    Raises:
        ConfigError: a domain of ``data.<kind>_domains`` has no weight (names it).
    """
    domains = cfg["data"]["pretrain_domains" if section == "pretrain" else "sft_domains"]
    raw = raw_section(cfg, section)
    weights = raw["domain_weights"]
    missing = [d for d in domains if d not in weights]
    if missing:
        raise ConfigError(
            f"{section_name(section)}.domain_weights has no weight for {missing} (0 to skip a domain)"
        )
    section_cfg = {k: v for k, v in raw.items() if k not in _NOT_TRAINING}
    return {**section_cfg, "domain_weights": {d: weights[d] for d in domains}}


ABLATION_TABLES = ("configurations", "granularity", "mlp_vs_attention")


def ablation_runs(cfg: dict) -> dict[str, dict]:
    """Every construction run of the ablations: run name -> `moelab.construct.construct_variant` spec.

    A run per method in ``construct_ablation.methods`` (built with construct.num_experts / top_k, the ablation's
    router_init, and num_shared_experts for methods that pick shared neurons themselves), plus every entry of
    ``construct_ablation.variants`` (its spec; router_init defaults to the ablation's).

    Raises:
        ConfigError: a variant named like a method, or a table list (configurations, granularity,
            mlp_vs_attention) naming a run that does not exist.
    """
    from moelab.construct import SHARED_EXPERT_METHODS

    a = cfg.get("construct_ablation") or {}
    c = cfg["construct"]
    runs: dict[str, dict] = {}
    for method in a.get("methods", []):
        spec = {"method": method, "num_experts": c["num_experts"], "top_k": c["top_k"]}
        spec["router_init"] = a.get("router_init", "random")
        if method in SHARED_EXPERT_METHODS:
            spec["num_shared_experts"] = a.get("num_shared_experts", 1)
        runs[method] = spec
    for name, spec in (a.get("variants") or {}).items():
        if name in runs:
            raise ConfigError(
                f"construct_ablation.variants.{name} has the name of a method; rename the variant"
            )
        runs[name] = {"router_init": a.get("router_init", "random"), **spec}
    for table in ABLATION_TABLES:
        missing = [r for r in a.get(table, []) if r not in runs]
        if missing:
            raise ConfigError(
                f"construct_ablation.{table} names unknown run(s) {missing}; runs: methods and variants {sorted(runs)}"
            )
    return runs


CPT_ABLATION_TABLES = ("sampling", "filtering")
_MIXTURE_RUN_KEYS = ("strategy", "init", "eta", "smoothing")


def _check_run_lists(section: dict, where: str, tables: tuple[str, ...]) -> dict:
    """The ``runs`` of an ablation section, after checking that ``headline`` and each table list name runs.

    Raises:
        ConfigError: a list naming an unknown run (names the key and the known runs).
    """
    runs = section.get("runs") or {}
    for key in ("headline", *tables):
        missing = [r for r in section.get(key, []) if r not in runs]
        if missing:
            raise ConfigError(f"{where}.{key} names unknown run(s) {missing}; runs: {sorted(runs)}")
    return runs


def run_seeds(cfg: dict, where: str, run: str) -> list[int]:
    """The seeds run ``run`` of ablation section ``where`` trains with: every one of ``<where>.seeds`` for a
    ``headline`` run (the table shows their spread), the first one otherwise (default: the config's seed)."""
    section = cfg.get(where) or {}
    seeds = [int(s) for s in section.get("seeds") or [cfg["seed"]]]
    return seeds if run in section.get("headline", []) else seeds[:1]


def cpt_ablation_runs(cfg: dict) -> dict[str, dict]:
    """Every training run of the CPT data ablations: ``"<run>/seed<seed>"`` -> its settings.

    Each run of ``cpt_ablation.runs`` trains with the first of ``cpt_ablation.seeds``; the runs in
    ``cpt_ablation.headline`` with every seed. A run's ``domain_weights`` (default: ``pretrain.domain_weights``)
    and mixture keys override the ``pretrain:`` settings; its ``filter`` picks the corpora
    (``none`` = ``resources/data/pretrain``; else ``resources/data/pretrain_filtered/<filter>``).

    Returns:
        id -> {"run", "seed", "filter", "train": overrides of the pretrain section (steps, domain_weights,
        mixture)}.

    Raises:
        ConfigError: a headline or table list naming an unknown run, weights naming an unknown domain,
            or a bad mixture setting (names the key).
    """
    from moelab.mixture import check_mixture_spec  # torch-free (mixture.strategies)

    a = cfg.get("cpt_ablation") or {}
    runs = _check_run_lists(a, "cpt_ablation", CPT_ABLATION_TABLES)
    domains = cfg["data"]["pretrain_domains"]
    base = train_section(cfg, "pretrain")
    out: dict[str, dict] = {}
    for name, spec in runs.items():
        given = dict(spec.get("domain_weights") or base["domain_weights"])
        unknown = [d for d, w in given.items() if d not in domains and w != 0]
        if unknown:
            raise ConfigError(
                f"cpt_ablation.runs.{name}.domain_weights names {unknown}, not in data.pretrain_domains {domains}"
                " (weight 0 leaves it out)"
            )
        missing = [d for d in domains if d not in given]
        if missing:
            raise ConfigError(
                f"cpt_ablation.runs.{name}.domain_weights has no weight for {missing} (0 to skip)"
            )
        weights = {d: float(given[d]) for d in domains}
        mixture = {
            **(base.get("mixture") or {}),
            "strategy": "static",  # a run names its own strategy and init; the main run's do not carry over
            "init": "weights",
            "eval_interval": a.get("eval_interval", 5),
            **{k: spec[k] for k in _MIXTURE_RUN_KEYS if k in spec},
        }
        try:
            check_mixture_spec(mixture, domains, where=f"cpt_ablation.runs.{name}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for seed in run_seeds(cfg, "cpt_ablation", name):
            out[f"{name}/seed{seed}"] = {
                "run": name,
                "seed": int(seed),
                "filter": spec.get("filter", "none"),
                "train": {"steps": a.get("steps", 40), "domain_weights": weights, "mixture": mixture},
            }
    return out


SFT_MIXTURE_TABLES = ("baselines",)
_SFT_RUN_KEYS = ("strategy", "init", "eta", "smoothing", "distance", "layers")
_SFT_ROUND_KEYS = ("eval_interval", "eval_batches", "dev_examples")


def sft_mixture_runs(cfg: dict) -> dict[str, dict]:
    """Every training run of the MoE-SFT data-mixture comparison: ``"<run>/seed<seed>"`` -> its settings.

    Each run of ``sft_mixture.runs`` trains ``sft_mixture.steps`` steps from the model SFT starts from, with the
    ``sft:`` settings and its own ``sft.mixture`` spec (MoE-SFT, arXiv 2406.11256, Sec. 4: every strategy at
    the same budget, from uniform weights over ``data.sft_domains`` unless ``init`` says otherwise); the rounds' settings (eval_interval,
    eval_batches, dev_examples) are the section's, so every run holds out the same dev examples.
    ``weights_from: <run>`` trains with that run's final weights, static (the "dynamic final weights" baseline;
    it reads the first seed's summary). Seeds: :func:`run_seeds` (``headline`` runs: every seed). Only the runs
    of ``headline`` and ``baselines`` (and the runs their ``weights_from`` read) are trained; every run is checked.

    Returns:
        id -> {"run", "seed", "weights_from": the id it reads or None, "train": overrides of the sft section
        (steps, mixture)}.

    Raises:
        ConfigError: a list naming an unknown run, an unknown run key, ``weights_from`` naming an unknown run,
            one without a dynamic strategy or combined with a strategy, a bad mixture setting, or a role naming
            a data set outside ``data.sft_domains`` (names the key).
    """
    from moelab.mixture import STRATEGIES, check_mixture_spec  # torch-free (mixture.strategies)

    a = cfg.get("sft_mixture") or {}
    runs = _check_run_lists(a, "sft_mixture", SFT_MIXTURE_TABLES)
    domains = cfg["data"]["sft_domains"]
    trained = a.get("headline") or a.get("baselines")  # the roles matter where a run is trained
    for role, ours in (a.get("roles") or {}).items() if trained else ():
        if ours not in domains:
            raise ConfigError(f"sft_mixture.roles.{role}={ours!r} is not in data.sft_domains {list(domains)}")
    first = run_seeds(cfg, "sft_mixture", "")[0]
    wanted = {*a.get("headline", []), *a.get("baselines", [])}
    wanted |= {(runs[r] or {}).get("weights_from") for r in wanted} - {
        None
    }  # a final-weights run needs its source
    out: dict[str, dict] = {}
    for name, spec in runs.items():
        spec = spec or {}
        where = f"sft_mixture.runs.{name}"
        known = {*_SFT_RUN_KEYS, "weights_from"}
        if set(spec) - known:
            raise ConfigError(
                f"{where}: unknown key {sorted(set(spec) - known)[0]!r}; known: {sorted(known)}"
            )
        source = spec.get("weights_from")
        if source is not None:
            strategy = (runs.get(source) or {}).get("strategy", "static")
            if source not in runs or not STRATEGIES[strategy].dynamic:
                raise ConfigError(
                    f"{where}.weights_from={source!r} must name a run of sft_mixture.runs with a dynamic strategy"
                )
            if "strategy" in spec or "init" in spec:
                raise ConfigError(
                    f"{where}: weights_from trains static from those weights; drop strategy/init"
                )
        mixture = {
            "strategy": "static",
            "init": "uniform" if source is None else "weights",  # the paper's start; final weights as given
            **{k: a[k] for k in _SFT_ROUND_KEYS if k in a},
            **{k: spec[k] for k in _SFT_RUN_KEYS if k in spec},
        }
        try:
            check_mixture_spec(mixture, domains, where=where, stage="sft")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for seed in run_seeds(cfg, "sft_mixture", name) if name in wanted else ():
            out[f"{name}/seed{seed}"] = {
                "run": name,
                "seed": seed,
                "weights_from": None if source is None else f"{source}/seed{first}",
                "train": {"steps": a.get("steps", cfg["sft"]["steps"]), "mixture": mixture},
            }
    return out


POST_TRAINING_SCHEDULES = ("two_stage", "one_stage")
_POST_ROUND_KEYS = ("eval_interval", "eval_batches", "dev_examples")


def _stage_weights(section: dict, key: str, domains) -> dict[str, float]:
    """``post_training.<key>.domain_weights`` over ``domains``, normalised to sum 1 (absent = 0).

    Raises: ConfigError: a weight naming an unknown data set, or weights summing to 0 (names the key).
    """
    given = (section.get(key) or {}).get("domain_weights") or {}
    unknown = [d for d, w in given.items() if d not in domains and w != 0]
    if unknown:
        raise ConfigError(
            f"post_training.{key}.domain_weights names {unknown}, not in data.sft_domains {list(domains)}"
        )
    total = sum(float(given.get(d, 0.0)) for d in domains)
    if not total > 0:
        raise ConfigError(f"post_training.{key}.domain_weights: no data set with a weight above 0")
    return {d: float(given.get(d, 0.0)) / total for d in domains}


def post_training_runs(cfg: dict) -> dict[str, dict]:
    """Every run of LLaMA-MoE v2's post-training at demo scale: ``"<run>/seed<seed>"`` -> its settings.

    Each run of ``post_training.table`` (the rows of table_post_training) and ``headline`` instruction-tunes the model of a construction run
    (``construct_ablation``: :func:`ablation_runs`) right after construction, with the ``sft:`` settings
    (LLaMA-MoE v2, arXiv 2411.15708, sec. 3: no continual pre-training). Schedules:

    - ``two_stage``: ``stage1.steps`` steps on ``stage1.domain_weights`` (general instruction data), then
      ``stage2.steps`` more on ``stage2.domain_weights`` (the math/code emphasis), each stage with its own
      warm-up and cosine decay, as v2 trains each stage.
    - ``one_stage``: the comparison at equal budget: one run of ``stage1.steps + stage2.steps`` steps on the
      step-weighted mean of the two stages' normalised weights, w = (s1 w1 + s2 w2) / (s1 + s2), so each data set
      is drawn as often in expectation as in the two-stage run; only the order differs.

    Every stage holds out the same ``dev_examples`` per data set it reads and scores their dev loss every
    ``eval_interval`` steps (a static ``sft.mixture``). Seeds: :func:`run_seeds` (``headline`` runs: every seed).

    Returns:
        id -> {"run", "seed", "construct": the construction run, "schedule", "stages": stage name -> overrides
        of the sft section (steps, domain_weights, mixture)}; stage names stage1, stage2 (two_stage) or
        one_stage, in training order.

    Raises:
        ConfigError: a headline or table list naming an unknown run, an unknown run key or schedule, ``construct`` naming no
            construction run, stage weights naming an unknown data set or summing to 0, a stage without steps
            (names the key).
    """
    a = cfg.get("post_training") or {}
    runs = _check_run_lists(a, "post_training", ("table",))
    wanted = [r for r in runs if r in {*a.get("table", []), *a.get("headline", [])}]
    if not wanted:
        return {}
    domains = cfg["data"]["sft_domains"]
    constructions = ablation_runs(cfg)
    steps = {}
    for key in ("stage1", "stage2"):
        n = (a.get(key) or {}).get("steps")
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"post_training.{key}.steps must be a positive integer, got {n!r}")
        steps[key] = n
    w1, w2 = _stage_weights(a, "stage1", domains), _stage_weights(a, "stage2", domains)
    total = steps["stage1"] + steps["stage2"]
    mixed = {d: (steps["stage1"] * w1[d] + steps["stage2"] * w2[d]) / total for d in domains}
    mixture = {"strategy": "static", "init": "weights", **{k: a[k] for k in _POST_ROUND_KEYS if k in a}}
    schedules = {
        "two_stage": {
            "stage1": {"steps": steps["stage1"], "domain_weights": w1, "mixture": mixture},
            "stage2": {"steps": steps["stage2"], "domain_weights": w2, "mixture": mixture},
        },
        "one_stage": {"one_stage": {"steps": total, "domain_weights": mixed, "mixture": mixture}},
    }
    out: dict[str, dict] = {}
    for name in wanted:
        spec, where = runs[name] or {}, f"post_training.runs.{name}"
        if set(spec) - {"construct", "schedule"}:
            raise ConfigError(f"{where}: unknown key {sorted(set(spec) - {'construct', 'schedule'})[0]!r}")
        if spec.get("construct") not in constructions:
            raise ConfigError(
                f"{where}.construct={spec.get('construct')!r} is not a construction run "
                f"(construct_ablation methods and variants: {sorted(constructions)})"
            )
        schedule = spec.get("schedule", "two_stage")
        if schedule not in POST_TRAINING_SCHEDULES:
            raise ConfigError(f"{where}.schedule={schedule!r}; one of {list(POST_TRAINING_SCHEDULES)}")
        for seed in run_seeds(cfg, "post_training", name):
            out[f"{name}/seed{seed}"] = {
                "run": name,
                "seed": seed,
                "construct": spec["construct"],
                "schedule": schedule,
                "stages": schedules[schedule],
            }
    return out


# The domains the local (PyPI) extractors know; moelab.data.local.PRETRAIN_DOMAINS / SFT_DOMAINS (a test
# keeps them equal; repeated here so that checking a config does not import torch).
LOCAL_PRETRAIN_DOMAINS = ("code", "books", "web", "wiki", "math")
LOCAL_SFT_DOMAINS = ("code", "explain", "general", "math")


def check_data_source(cfg: dict) -> None:
    """``data.source`` local: domains the PyPI extractors know; hub: every domain has a ``data.hub`` entry.

    Raises:
        ConfigError: names the domain and the key (``data.pretrain_domains``, ``data.hub.pretrain.<d>``, ...).
    """
    d = cfg["data"]
    source = d.get("source", "local")
    for kind, local in (("pretrain", LOCAL_PRETRAIN_DOMAINS), ("sft", LOCAL_SFT_DOMAINS)):
        domains = d[f"{kind}_domains"]
        if source == "local":
            unknown = [x for x in domains if x not in local]
            if unknown:
                raise ConfigError(
                    f"data.{kind}_domains has {unknown}, unknown to data.source local; "
                    f"local domains: {list(local)} (or set data.source: hub with data.hub.{kind})"
                )
            continue
        specs = (d.get("hub") or {}).get(kind) or {}
        missing = [x for x in domains if x not in specs]
        if missing:
            raise ConfigError(
                f"data.source hub: data.hub.{kind} has no entry for {missing} (data.{kind}_domains)"
            )
        for name in domains:
            spec = specs[name]
            if ("filter_field" in spec) != ("filter_value" in spec):
                raise ConfigError(f"data.hub.{kind}.{name}: give filter_field and filter_value together")
            if (
                kind == "sft"
                and spec.get("format") == "fields"
                and not (spec.get("prompt_fields") and spec.get("response_field"))
            ):
                raise ConfigError(
                    f"data.hub.sft.{name}: format fields needs prompt_fields and response_field"
                )


def check_launcher(cfg: dict) -> None:
    """``launcher`` vs ``device`` and the training batch sizes.

    The launcher section itself is checked by :class:`moelab.train.config.LauncherConfig` (the one place).

    Raises:
        ConfigError: what :class:`~moelab.train.config.LauncherConfig` rejects (unknown kind, several
            processes with ``kind: none``, ``kind: accelerate`` without ``accelerate_config``); ``kind:
            accelerate`` on CPU (accelerate launch starts several CPU processes only through MPI: use
            torchrun); a ``batch_size`` that does not split into ``micro_batch_size x num_processes`` (names
            the section).
    """
    try:
        launcher = LauncherConfig.from_section(cfg.get("launcher"))  # the launcher's own checks
    except ValueError as err:
        raise ConfigError(str(err)) from None
    n = launcher.num_processes
    if launcher.kind == "accelerate" and cfg["device"] == "cpu":
        raise ConfigError(
            "launcher.kind accelerate needs device cuda (config/accelerate/ targets GPU nodes); "
            "use launcher.kind torchrun on CPU"
        )
    for section in train_sections(cfg):
        t = raw_section(cfg, section)
        micro = t.get("micro_batch_size") or 1
        if t["batch_size"] % n or (t["batch_size"] // n) % micro:
            name = section_name(section)
            raise ConfigError(
                f"{name}.batch_size={t['batch_size']} does not split into {name}.micro_batch_size="
                f"{t.get('micro_batch_size')} x launcher.num_processes={n}"
            )


def _check_split(facts, num_experts: int, key: str) -> None:
    if facts.intermediate_size % num_experts:
        raise ConfigError(
            f"{key}={num_experts} does not divide intermediate_size={facts.intermediate_size} of {facts.source} "
            f"(remainder {facts.intermediate_size % num_experts}); experts are equal slices of the FFN"
        )


def compress_recipes(cfg: dict) -> dict[str, list[dict]]:
    """The compression recipes of ``compress.recipes``, checked (:func:`moelab.compress.recipe.check_recipes`).

    Raises: ConfigError naming the key of a bad recipe or step.
    """
    from moelab.compress.recipe import check_recipes  # torch-free

    try:
        return check_recipes(cfg["compress"])
    except ValueError as err:
        raise ConfigError(str(err)) from None


def recovery_lengths(cfg: dict) -> dict[str, int]:
    """``compress.recipes.<name>[<i>].seq_len`` -> tokens of every lora_recovery step (its default if unset)."""
    from moelab.compress.recipe import LORA_DEFAULTS, RECOVERY  # torch-free

    return {
        f"compress.recipes.{name}[{i}].seq_len": step.get("seq_len", LORA_DEFAULTS["seq_len"])
        for name, steps in compress_recipes(cfg).items()
        for i, step in enumerate(steps)
        if step["method"] in RECOVERY
    }


def _check_n_drop(cfg: dict, facts, where: str) -> None:
    """Every recipe's Block Drop steps leave at least one block of the model compressed."""
    from moelab.compress.recipe import blocks_dropped

    if facts is None:
        return
    for name, steps in compress_recipes(cfg).items():
        n_drop = blocks_dropped(steps)
        if not n_drop < facts.num_hidden_layers:
            raise ConfigError(
                f"compress.recipes.{name} drops {n_drop} blocks (block_drop n_drop): it must leave one of the "
                f"{facts.num_hidden_layers} blocks of {where} ({facts.source})"
            )
        for i, step in enumerate(steps):
            if step["method"] == "layer_drop" and not step["n_drop"] < facts.num_hidden_layers:
                raise ConfigError(
                    f"compress.recipes.{name}[{i}].n_drop={step['n_drop']} must be below the "
                    f"{facts.num_hidden_layers} FFN layers of {where} ({facts.source})"
                )


def _check_expert_drop(cfg: dict, base=None) -> None:
    """Expert Drop keeps between top_k and num_experts - 1 experts of the MoE compressed: our own (construct
    section), or compress.base_model's when its facts are known (``base``: a local folder or a known hub id)."""
    if cfg["compress"].get("base_model"):
        if base is None or base.num_experts is None:
            return  # a hub id known only after its download, or a dense base (expert_drop then names it)
        top_k, n = base.top_k, base.num_experts
        where = f"top_k={top_k}, num_experts={n}) of compress.base_model ({base.source})"
    else:
        c = cfg["construct"]
        top_k, n = c["top_k"], c["num_experts"]
        where = f"construct.top_k={top_k}, construct.num_experts={n}) (the MoE compressed)"
    for name, steps in compress_recipes(cfg).items():
        for i, step in enumerate(steps):
            if step["method"] == "expert_drop" and not top_k <= step["keep"] < n:
                raise ConfigError(f"compress.recipes.{name}[{i}].keep={step['keep']} must lie in [{where}")


def check_model_facts(cfg: dict) -> None:
    """Checks that need the model's sizes, read without loading weights (`moelab.model_facts`).

    The dense model's sizes (``model.tiny``, a local folder's config.json, or the GGUF header) decide: every
    construction's num_experts divides intermediate_size (equal expert slices, LLaMA-MoE sec. 3.1), the
    attention MoE picks at most num_key_value_heads groups, sequence lengths fit max_position_embeddings, and
    every compression recipe leaves a block and keeps at least top_k experts. Local base_model folders (sft /
    compress) must exist and hold a config.json. A hub id is checked by its published sizes when
    `moelab.model_facts.HUB_FACTS` knows it (Mixtral-8x7B), else after its download.

    Raises:
        ConfigError: naming the config key to change.
    """
    facts = dense_facts(cfg["model"])
    bases = {}
    for section in ("sft", "compress"):
        spec = (cfg[section].get("base_model") or {}).get("pretrained")
        bases[section] = spec_facts(spec, f"{section}.base_model.pretrained") if spec else None
    if facts is not None:
        c = cfg["construct"]
        _check_split(facts, c["num_experts"], "construct.num_experts")
        remainder = cfg.get("construct_ablation", {}).get("remainder", "error")
        for name, spec in ablation_runs(cfg).items():
            if "num_experts" in spec and remainder == "error":
                _check_split(facts, spec["num_experts"], f"construct_ablation.variants.{name}.num_experts")
            top = spec.get("attention_top_k")
            if top is not None and top > facts.num_key_value_heads:
                raise ConfigError(
                    f"construct_ablation.variants.{name}.attention_top_k={top} exceeds the "
                    f"{facts.num_key_value_heads} key-value head groups of {facts.source}"
                )
        limit = facts.max_position_embeddings
        lengths = {
            "pretrain.seq_len": cfg["pretrain"]["seq_len"],
            "sft.max_len": cfg["sft"]["max_len"],
            "compress.calib_seq_len": cfg["compress"].get("calib_seq_len"),
            "routing.seq_len": cfg.get("routing", {}).get("seq_len"),
            **recovery_lengths(cfg),
        }
        for key, length in lengths.items():
            if limit and length and length > limit:
                raise ConfigError(f"{key}={length} exceeds max_position_embeddings={limit} of {facts.source}")
        if not cfg["compress"].get("base_model"):
            _check_n_drop(cfg, facts, "the dense model")
    _check_expert_drop(cfg, bases["compress"])
    _check_n_drop(cfg, bases["compress"], "compress.base_model")
    compressed = bases["compress"] if cfg["compress"].get("base_model") else facts
    _check_speed_lens(cfg, compressed, "compress.base_model" if bases["compress"] else "the dense model")


def _check_speed_lens(cfg: dict, facts, where: str) -> None:
    """The longest speed prompt and its as-many generated tokens fit the compressed model's context."""
    lens = (cfg["compress"].get("speed") or {}).get("prompt_lens") or []
    limit = getattr(facts, "max_position_embeddings", None)
    if lens and limit and 2 * max(lens) > limit:
        raise ConfigError(
            f"compress.speed.prompt_lens: {max(lens)} prompt + {max(lens)} generated tokens exceed "
            f"max_position_embeddings={limit} of {where} ({facts.source}); use prompt lengths <= {limit // 2}"
        )


def check_workflow_config(cfg: dict, base: dict | None = None, overlays=()) -> None:
    """Every check the config alone decides, run by the Snakefile when the DAG is built (before any job).

    Args:
        cfg: the merged, schema-validated config.
        base: config.yaml as loaded, and ``overlays``: (file, parsed YAML) of each ``--configfile`` in order,
            for the overlay check (`moelab.config_keys.check_overlays`); omit both for a single config.

    Raises:
        ConfigError: naming the key (and for overlays the file).
    """
    check_finite(cfg)
    if base is not None:
        check_overlays(base, overlays)
    check_config(cfg)
    check_model_facts(cfg)
    if "sparse_adapter" in cfg:
        from moelab.adapters.plan import check_section

        check_section(cfg["sparse_adapter"])
