"""Exceptions shared across moelab's floors (ground floor: imports nothing of moelab).

Every package may raise these; keeping them here lets low floors (evaluate.plan, train.config) raise the
same error class the workflow's config check raises, without importing ``moelab.config``.
"""


class ConfigError(ValueError):
    """A config value that is well-typed but inconsistent; the message names the key to change."""
