"""moelab: build, train, compress and evaluate Mixture-of-Experts models made from dense LLaMA models."""

__version__ = "0.1.0"
