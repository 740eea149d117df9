"""Cross-field checks of the workflow config (the JSON schema checks single keys and types)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that is well-typed but inconsistent; the message names the key to change."""


def check_config(cfg: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key when sections of ``cfg`` disagree."""
    c = cfg["construct"]
    if c["top_k"] > c["num_experts"]:
        raise ConfigError(f"construct.top_k={c['top_k']} exceeds construct.num_experts={c['num_experts']}")
    domains = set(cfg["data"]["pretrain_domains"])
    for key in cfg["pretrain"]["domain_weights"]:
        if key not in domains:
            raise ConfigError(
                f"pretrain.domain_weights has domain {key!r} that is not in data.pretrain_domains {sorted(domains)}"
            )
    if sum(cfg["pretrain"]["domain_weights"].values()) <= 0:
        raise ConfigError("pretrain.domain_weights must have a positive sum")
    sft_domains = set(cfg["data"]["sft_domains"])
    for key in cfg["sft"]["domain_weights"]:
        if key not in sft_domains:
            raise ConfigError(
                f"sft.domain_weights has data set {key!r} that is not in data.sft_domains {sorted(sft_domains)}"
            )
    calib = cfg["compress"].get("calib_domain", "web")
    if calib not in domains:
        raise ConfigError(
            f"compress.calib_domain={calib!r} is not in data.pretrain_domains {sorted(domains)}"
        )
    m = cfg["model"]
    needed = {"gguf": ("gguf_package", "gguf_file"), "pretrained": ("pretrained",), "tiny": ("tiny",)}[
        m["source"]
    ]
    for key in needed:
        if key not in m:
            raise ConfigError(f"model.source={m['source']!r} needs model.{key}")
