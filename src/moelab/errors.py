"""Exceptions shared across moelab's floors (ground floor: imports nothing of moelab).

Every package may raise these; keeping them here lets low floors (evaluate.plan, train.config) raise the
same error class the workflow's config check raises, without importing ``moelab.config``.
"""


class ConfigError(ValueError):
    """A config value that is well-typed but inconsistent; the message names the key to change."""


# results/... and resources/... outputs: (path prefix, number of path parts that name the rule's output).
_OUTPUT_PARTS = (
    (("results", "checkpoints"), None),  # a training checkpoint: the step folder; the training rule resumes
    (("results", "eval", "cache"), None),  # an evaluation cache entry: the entry itself is rescored
    (("resources", "data"), 4),  # resources/data/<kind>/<domain>.jsonl or <task>/
    (("resources",), 3),  # resources/models/<name>
    (("results",), 3),  # results/models/<stage>, results/<stage>/<file>
)


def rebuild_hint(path) -> str:
    """What to do about a damaged file: the output to delete and the snakemake target that rebuilds it.

    ``path`` may be absolute or relative; its part from ``results/`` or ``resources/`` on names the rule's
    output (``resources/models/dense/model.safetensors`` -> ``resources/models/dense``). Training checkpoints
    (``results/checkpoints/...``) and evaluation cache entries are deleted alone: the training rule resumes
    from the previous checkpoint, the evaluation rescores the entry. Other paths get a generic hint.
    """
    from pathlib import PurePath

    parts = PurePath(path).parts
    tops = [i for i, part in enumerate(parts) if part in ("results", "resources")]
    if tops:  # the last one: a checkout below a folder named results/ or resources/ keeps its hint
        rel = parts[tops[-1] :]
        for prefix, n in _OUTPUT_PARTS:
            if rel[: len(prefix)] != prefix:
                continue
            if prefix[1:] == ("checkpoints",):
                step = next((p for p in rel if p.startswith("step-")), None)
                what = PurePath(*rel[: rel.index(step) + 1]) if step else PurePath(*rel)
                return f"delete {what} and rerun the training rule (it resumes from the previous checkpoint)"
            if n is None:
                return f"delete {PurePath(*rel)} and rerun the evaluation (it rescores that task)"
            target = PurePath(*rel[:n])
            return f"delete {target} and rerun `snakemake {target}` (the rule that made it rebuilds it)"
    return f"delete {path} and rebuild it (rerun the step that wrote it)"


class DamagedFileError(ValueError):
    """A file that exists but is damaged (truncated, wrong size or checksum, unparseable).

    The message names the damaged file, what is wrong and what to do (``rebuild_hint``). Subclasses
    ValueError: the file is there, its content is wrong.
    """

    def __init__(self, path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"damaged file {path}: {problem}; {rebuild_hint(path)}")
