"""Key-level checks of the workflow config that JSON schema cannot express (ground floor: no moelab imports
besides ``errors``).

- :func:`check_finite`: NaN and infinity are rejected wherever a number is read (YAML's ``.nan`` / ``.inf``
  pass JSON-schema bounds, because every comparison with NaN is false).
- :func:`check_overlays`: an overlay file (``--configfile config/X.yaml``) is deep-merged over config.yaml by
  Snakemake: a map is updated key by key, everything else (numbers, strings, lists) replaces. An empty map
  ``{}`` therefore changes nothing, which is never what its author meant: it is an error naming the file and
  the key, with the two ways to say what was meant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from moelab.errors import ConfigError


def walk(value, key: str = "") -> Iterator[tuple[str, object]]:
    """Every leaf of a nested config as (dotted key, value); list items get ``[i]`` (``pretrain.betas[0]``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from walk(v, f"{key}[{i}]")
    else:
        yield key, value


def check_finite(cfg: dict) -> None:
    """Reject NaN and +-inf anywhere in ``cfg``.

    Raises:
        ConfigError: naming the dotted key of the first non-finite number (e.g. ``pretrain.lr``).
    """
    for key, value in walk(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number")


def _empty_maps(overlay: dict, base: dict, key: str = "") -> Iterator[str]:
    for k, v in overlay.items():
        dotted = f"{key}.{k}" if key else str(k)
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            if not v and base[k]:
                yield dotted
            else:
                yield from _empty_maps(v, base[k], dotted)


def check_overlays(base: dict, overlays: Sequence[tuple[str | Path, dict]]) -> None:
    """Refuse an empty map in an overlay where the config it is merged over has a non-empty one.

    Args:
        base: config.yaml as loaded (before any overlay).
        overlays: (file name, its parsed YAML) in the order Snakemake applies them.

    Raises:
        ConfigError: naming the overlay file and the dotted key.
    """
    merged = dict(base)
    for name, overlay in overlays:
        for key in _empty_maps(overlay or {}, merged):
            raise ConfigError(
                f"{name}: {key}: {{}} keeps every entry of the map it is merged over (overlays update maps key "
                "by key); set the entries you want gone to 0 or null, or list the full map you mean"
            )
        merged = _merged(merged, overlay or {})


def _merged(base: dict, overlay: dict) -> dict:
    """Snakemake's merge of an overlay over a config: maps key by key, anything else replaced."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dotted(path: Sequence) -> str:
    """A JSON-schema error path as a config key: ``['pretrain', 'betas', 0]`` -> ``pretrain.betas[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def check_schema(cfg: dict, schema_path: str | Path) -> None:
    """Validate ``cfg`` against the workflow's JSON schema, naming the dotted key of the error.

    Snakemake's own ``validate`` (which also fills the schema's defaults) runs afterwards; this runs first so
    that a wrong value is reported as ``pretrain.lr: ...`` rather than as a JSON path inside a traceback.

    Raises:
        ConfigError: ``<dotted key>: <what the schema says>`` for the most relevant error (jsonschema's
            ``best_match``).
    """
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":  # name the unknown key itself
            known = set(error.schema.get("properties", {}))
            path += sorted(k for k in error.instance if k not in known)[:1]
        elif error.validator == "required":  # name the missing key itself
            path += [k for k in error.validator_value if k not in error.instance][:1]
        raise ConfigError(f"{dotted(path)}: {error.message} (config/schema.yaml)")
