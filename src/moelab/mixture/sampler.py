"""Samplers over named sources (pretraining domains, instruction data sets) mixed by weights.

Every sampler follows :class:`Sampler`: current ``weights``, ``set_weights`` (what a dynamic mixture strategy
calls between rounds), ``state_dict`` / ``load_state_dict`` (saved with each training checkpoint) and
``draw(name, rng)``, the next item of one named source. :class:`WeightedSampler` holds the part they share:
the weights, and per batch row a source drawn from Categorical(weights), then that source's next item.

- :class:`DomainSampler`: packed pretraining blocks, each from one domain (LLaMA-MoE, arXiv 2406.16554,
  Sec. 4.1; the domain weights are the prob_map that Sheared-LLaMA dynamic batch loading, arXiv 2310.06694
  Sec. 3.2, updates). Stateless per step: batch ``s`` is a function of (seed, s, weights).
- :class:`MixtureSampler`: chat examples, per example a data set drawn by the sampling weights and its next
  example taken, cycling (MoE-SFT, arXiv 2406.11256, Sec. 3-4). Upstream's sampler could not be resumed;
  this one keeps its whole position in ``state_dict()``.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

import numpy as np
import torch

from moelab.data.chat import pad_examples
from moelab.mixture.base import normalise


def normalise_domain_weights(
    weights: dict[str, float], domains: list[str], what: str = "weights"
) -> np.ndarray:
    """:func:`moelab.mixture.base.normalise` as float64 [len(domains)] in the order of ``domains``.

    Raises:
        ValueError: as :func:`moelab.mixture.base.normalise` (names the domain).
    """
    w = normalise(weights, domains, what)
    return np.array([w[k] for k in domains], dtype=np.float64)


class Sampler(Protocol):
    """A sampler over named sources mixed by weights (the interface a mixture strategy drives)."""

    names: list[str]  # the sources, sorted

    @property
    def weights(self) -> dict[str, float]: ...  # source -> current weight, normalised to sum 1

    def set_weights(self, new: dict[str, float]) -> None: ...

    def draw(self, name: str, rng: np.random.Generator) -> Any: ...  # the next item of source ``name``

    def state_dict(self) -> dict: ...  # JSON-serialisable; restores the same continuation

    def load_state_dict(self, state: dict) -> None: ...


class WeightedSampler:
    """The weights of named sources and the per-row source draw; subclasses define ``draw``.

    Args:
        names: the sources (kept sorted: the index order of the weight vector).
        weights: source -> weight >= 0 (normalised here).
        batch_size: rows per batch B.
        seed: sampling seed.

    Raises:
        ValueError: ``batch_size`` < 1, or bad weights (the message names the class and the source).
    """

    def __init__(self, names, weights: dict[str, float], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        self.names = sorted(names)
        self.batch_size = batch_size
        self.seed = seed
        self.set_weights(weights)

    @property
    def weights(self) -> dict[str, float]:
        """Current normalised weights."""
        return dict(zip(self.names, self._w.tolist(), strict=True))

    def set_weights(self, new: dict[str, float]) -> None:
        """Replace the weights (e.g. after a dynamic-mixing update); normalised to sum 1."""
        self._w = normalise_domain_weights(new, self.names, type(self).__name__)

    def draw(self, name: str, rng: np.random.Generator) -> Any:
        """The next item of source ``name`` (``rng``: the batch's generator, for samplers that use it)."""
        raise NotImplementedError

    def draw_rows(self, rng: np.random.Generator) -> tuple[list, list[str]]:
        """B rows: per row a source ~ Categorical(weights), then its next item (drawn in row order).

        Returns:
            (the B items, the B source names).
        """
        which = rng.choice(len(self.names), size=self.batch_size, p=self._w)
        names = [self.names[d] for d in which]
        return [self.draw(name, rng) for name in names], names


class DomainSampler(WeightedSampler):
    """Draw batches of packed blocks, each row from one domain chosen by the domain weights.

    ``batch(step)`` is a pure function of ``(seed, step, current weights)``: resuming at step s yields
    the same batches as an uninterrupted run (no hidden iterator state). Rows are drawn with replacement:
    domain ~ Categorical(weights), then a block uniformly within that domain.

    Args:
        blocks: domain -> LongTensor [n_d, T] (same T for every domain, n_d >= 1).
        domain_weights: domain -> weight >= 0 (normalised here; the prob_map of LLaMA-MoE).
        batch_size: rows per batch B.
        seed: sampling seed.

    Raises:
        ValueError: empty domain, mismatched block lengths, bad weights (names the domain).
    """

    def __init__(
        self, blocks: dict[str, torch.Tensor], domain_weights: dict[str, float], batch_size: int, seed: int
    ):
        if not blocks:
            raise ValueError("DomainSampler: no domains given")
        lengths = {k: v.shape[1] for k, v in blocks.items() if v.dim() == 2}
        for k in sorted(blocks):
            if blocks[k].dim() != 2 or blocks[k].shape[0] < 1:
                raise ValueError(
                    f"DomainSampler: domain {k!r} needs blocks of shape [n >= 1, T], got {tuple(blocks[k].shape)}"
                )
        if len(set(lengths.values())) != 1:
            raise ValueError(f"DomainSampler: block lengths differ between domains: {lengths}")
        self.blocks = {k: blocks[k].long() for k in sorted(blocks)}
        super().__init__(blocks, domain_weights, batch_size, seed)

    @property
    def domains(self) -> list[str]:
        """The domains, sorted (= ``names``)."""
        return self.names

    def draw(self, name: str, rng: np.random.Generator) -> torch.Tensor:
        """A block of domain ``name``, uniformly: LongTensor [T]."""
        return self.blocks[name][int(rng.integers(self.blocks[name].shape[0]))]

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """The batch for training step ``step``.

        Returns:
            (LongTensor [B, T] of token ids, list of B domain names, one per row).
        """
        rows, names = self.draw_rows(np.random.default_rng([self.seed, step]))
        return torch.stack(rows), names

    def state_dict(self) -> dict:
        """The sampler state: its current domain weights (the draws are a function of seed and step)."""
        return {"domain_weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``: set its domain weights."""
        self.set_weights(state["domain_weights"])


class MixtureSampler(WeightedSampler):
    """Per example, draw a data set from the sampling weights and take its next example; resumable.

    Each data set is read in a per-epoch shuffled order (``default_rng([seed, crc32(name), epoch])``) and
    cycles when exhausted. The data-set choices of batch b come from ``default_rng([seed, b])``. Hence the
    whole sampler state is (batch counter, per data set epoch and position, weights): ``state_dict()``.

    Args:
        datasets: name -> list of encoded examples (``moelab.data.chat.encode_chat`` outputs).
        weights: name -> weight >= 0 (normalised).
        batch_size: examples per batch B.
        seed: sampling seed.
        pad_id: token id used to right-pad input_ids.

    Raises:
        ValueError: an empty data set or bad weights (names it).
    """

    def __init__(
        self,
        datasets: dict[str, list[dict]],
        weights: dict[str, float],
        batch_size: int,
        seed: int,
        pad_id: int,
    ):
        if not datasets:
            raise ValueError("MixtureSampler: no data sets given")
        for name, examples in datasets.items():
            if not examples:
                raise ValueError(f"MixtureSampler: data set {name!r} is empty")
        self.datasets = {k: datasets[k] for k in sorted(datasets)}
        self.pad_id = pad_id
        self.step = 0
        self.positions = {k: [0, 0] for k in self.datasets}  # name -> [epoch, index within the epoch's order]
        self._orders: dict[tuple[str, int], np.ndarray] = {}
        super().__init__(datasets, weights, batch_size, seed)

    def _order(self, name: str, epoch: int) -> np.ndarray:
        key = (name, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != name}  # keep one epoch per set
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), epoch])
            self._orders[key] = rng.permutation(len(self.datasets[name]))
        return self._orders[key]

    def draw(self, name: str, rng: np.random.Generator | None = None) -> dict:
        """The next example of data set ``name`` in its epoch's order (``rng`` is not used)."""
        epoch, pos = self.positions[name]
        example = self.datasets[name][int(self._order(name, epoch)[pos])]
        pos += 1
        if pos == len(self.datasets[name]):
            epoch, pos = epoch + 1, 0
        self.positions[name] = [epoch, pos]
        return example

    def next_batch(self) -> dict:
        """The next batch, right-padded to its longest example.

        Returns:
            ``{"input_ids": LongTensor [B, T], "attention_mask": LongTensor [B, T],
            "labels": LongTensor [B, T] (-100 on padding), "domains": list of B names}``.
        """
        examples, domains = self.draw_rows(np.random.default_rng([self.seed, self.step]))
        self.step += 1
        return {**pad_examples(examples, self.pad_id), "domains": domains}

    def state_dict(self) -> dict:
        """JSON-serialisable sampler state (batch counter, per data set [epoch, position], weights)."""
        return {
            "step": self.step,
            "positions": {k: list(v) for k, v in self.positions.items()},
            "weights": self.weights,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; the next batches equal those the saved sampler would have drawn.

        Raises:
            ValueError: the state's data sets differ from this sampler's, or it was saved with another seed.
        """
        if sorted(state["positions"]) != self.names:
            raise ValueError(
                f"MixtureSampler state has data sets {sorted(state['positions'])}, sampler has {self.names}"
            )
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"MixtureSampler state was saved with seed {state['seed']}, sampler has seed {self.seed}"
            )
        for name, (_, pos) in state["positions"].items():
            if not 0 <= int(pos) < len(self.datasets[name]):
                raise ValueError(
                    f"MixtureSampler state: position {pos} of data set {name!r} is outside its {len(self.datasets[name])} examples"
                )
        self.step = int(state["step"])
        self.positions = {k: [int(e), int(p)] for k, (e, p) in state["positions"].items()}
        self.set_weights(state["weights"])
