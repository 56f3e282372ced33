"""Synthetic sparse features: independent, correlated and anticorrelated.

Sampling is split in two so that random numbers are drawn once and shared where that is
valid: :func:`draw_uniforms` turns a key into the raw uniforms a batch needs (this is where
the time goes on CPU), and :func:`features_from_uniforms` turns them into features for one
instance's feature probabilities. One uniform per feature gives both the mask and the
magnitude: feature ``i`` is active iff ``u < p_i`` and then takes ``u / p_i``, which is
``U[0, 1)`` given that it is active. Instances of one seed can therefore share the draw
(common random numbers) while each keeps its own ``p``. Signed inputs (the computation
model's, ``signed=True``) map an active magnitude ``v`` to ``2 v - 1``, uniform on
``[-1, 1)``, from the same uniform.

Feature order inside a vector: correlated sets, then anticorrelated sets, then the
independent rest (as in the paper's notebook).

:class:`DataPlan` is the one place that decides, for a sweep, which random-number backend
draws the data (the fused counter hash or a :func:`jax.random.key` implementation), whether
instances of one seed share a stream, and whether a batch is laid out feature-major; the
compiled program only calls its methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

ANTICORRELATED_MODES = ("paper", "arena")
#: Below this many features an independent, hashed batch is laid out feature-major.
FEATURE_MAJOR_BELOW = 128
#: Below this many features the hashed stream numbers a batch's elements feature-major (the
#: order every run with so few features has drawn since the layout came in); from it, in
#: batch-major order whatever the layout, so a feature-major batch holds the same numbers
#: as a batch-major one, transposed.
FEATURE_ORDER_BELOW = 16
#: Salt of the evaluation streams (training streams are salted by the step number).
EVAL_SALT = 2


@dataclass(frozen=True)
class FeatureStructure:
    """Static structure of a feature vector (which features move together).

    Attributes:
      n_features: total number of features.
      correlated_sets: number of correlated sets (first in the vector).
      correlated_size: features per correlated set; a set is all-or-nothing active.
      anticorrelated_sets: number of anticorrelated sets (after the correlated ones).
      anticorrelated_size: features per anticorrelated set.
      anticorrelated_mode: ``"paper"``: the set is active with probability ``p`` and exactly
        one member, uniform at random, fires (marginal ``p / k``). ``"arena"``: pairs only,
        marginal ``p`` per feature and never both (``p <= 0.5``).
    """

    n_features: int
    correlated_sets: int = 0
    correlated_size: int = 2
    anticorrelated_sets: int = 0
    anticorrelated_size: int = 2
    anticorrelated_mode: str = "paper"

    def __post_init__(self):
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        for name in ("correlated_sets", "anticorrelated_sets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("correlated_size", "anticorrelated_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.anticorrelated_mode not in ANTICORRELATED_MODES:
            raise ValueError(
                f"anticorrelated_mode must be one of {ANTICORRELATED_MODES}, "
                f"got {self.anticorrelated_mode!r}"
            )
        if self.anticorrelated_mode == "arena" and self.anticorrelated_sets and (
            self.anticorrelated_size != 2
        ):
            raise ValueError("anticorrelated_mode='arena' is defined for pairs only "
                             "(anticorrelated_size=2)")
        if self.n_structured > self.n_features:
            raise ValueError(
                f"correlated and anticorrelated sets use {self.n_structured} features but "
                f"n_features is {self.n_features}"
            )

    @property
    def n_correlated(self) -> int:
        return self.correlated_sets * self.correlated_size

    @property
    def n_anticorrelated(self) -> int:
        return self.anticorrelated_sets * self.anticorrelated_size

    @property
    def n_structured(self) -> int:
        return self.n_correlated + self.n_anticorrelated

    @property
    def n_sets(self) -> int:
        return self.correlated_sets + self.anticorrelated_sets

    @property
    def independent(self) -> bool:
        return self.n_sets == 0


def _lowbias32(h: Array) -> Array:
    # A bijective 32-bit integer hash with very low avalanche bias (C. Wellons, "Prospecting
    # for hash functions", 2018: the "lowbias32" constants).
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def hash_key(bits: Array, salt: Array | int) -> Array:
    """Derive the 64-bit hash key for ``salt`` (a step number, say) from ``bits: uint32[2]``."""
    salt = jnp.asarray(salt, jnp.uint32)
    return jnp.stack([_lowbias32(bits[0] ^ _lowbias32(salt + jnp.uint32(0x9E3779B9))),
                      _lowbias32(bits[1] + _lowbias32(salt ^ jnp.uint32(0x85EBCA6B)))])


def hash_uniform(bits: Array, shape: tuple[int, ...], salt: int = 0,
                 order: tuple[int, ...] | None = None) -> Array:
    """Uniforms on [0, 1) from a counter-based hash, ``shape`` of float32.

    ``bits: uint32[2]`` is the key (see :func:`hash_key`). Element ``j`` (its row-major
    index; with ``order``, its row-major index in the array transposed to those axes, so
    ``hash_uniform(k, (n, b), order=(1, 0))`` is ``hash_uniform(k, (b, n)).T``)
    gets ``lowbias32(lowbias32(j ^ k0) + k1)``, and its top 23 bits become the mantissa. It
    is pure elementwise integer arithmetic, so XLA fuses it into the ops that consume the
    data and the batch is never written to memory; on a 2-core CPU that is about 8x cheaper
    than drawing the same uniforms with threefry and 6x cheaper than "rbg". ``salt`` gives
    independent arrays from one key. Not a cryptographic generator: fine for sampling
    synthetic features, and tested for uniformity and independence in tests/test_data.py.
    """
    k = hash_key(bits, salt) if salt else bits
    axes = tuple(range(len(shape))) if order is None else tuple(order)
    idx = jax.lax.broadcasted_iota(jnp.uint32, shape, axes[0])
    for d in axes[1:]:
        idx = idx * jnp.uint32(shape[d]) + jax.lax.broadcasted_iota(jnp.uint32, shape, d)
    h = _lowbias32(_lowbias32(idx ^ k[0]) + k[1])
    return jax.lax.bitcast_convert_type((h >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0


def draw_uniforms(key: Array, batch_size: int, structure: FeatureStructure,
                  fused: bool = False) -> dict[str, Array]:
    """All the randomness one batch needs: ``u [batch, n]`` and, with sets, ``set_u``.

    ``fused=True``: ``key`` is a ``uint32[2]`` hash key and the draw is :func:`hash_uniform`
    (elementwise, fuses into the consumer). Otherwise ``key`` is a JAX PRNG key and the draw
    is ``jax.random.uniform`` under the key's own implementation.
    """
    shape_u = (batch_size, structure.n_features)
    shape_s = (batch_size, structure.n_sets)
    if fused:
        out = {"u": hash_uniform(key, shape_u)}
        if not structure.independent:
            out["set_u"] = hash_uniform(key, shape_s, salt=1)
        return out
    if structure.independent:
        return {"u": jax.random.uniform(key, shape_u)}
    k1, k2 = jax.random.split(key)
    return {"u": jax.random.uniform(k1, shape_u), "set_u": jax.random.uniform(k2, shape_s)}


def _value(magnitude: Array, signed: bool) -> Array:
    """An active feature's value from its ``U[0, 1)`` magnitude: itself, or ``2 v - 1``."""
    return 2.0 * magnitude - 1.0 if signed else magnitude


def features_from_uniforms(
    uniforms: dict[str, Array], feature_probability: Array, structure: FeatureStructure,
    signed: bool = False,
) -> Array:
    """Features ``x: [batch, n]`` for one instance from shared uniforms.

    Args:
      uniforms: output of :func:`draw_uniforms`.
      feature_probability: ``[n]`` probability that each feature is active (``1 - S``). For a
        set, the probability of its first member is the set's probability.
      structure: the static feature structure.
      signed: active features are uniform on ``[-1, 1)`` instead of ``[0, 1)`` (same
        uniforms, same masks).
    """
    u = uniforms["u"]
    p = feature_probability
    if structure.independent:
        return jnp.where(u < p, _value(u / p, signed), 0.0)

    parts = []
    set_u = uniforms["set_u"]
    nc, kc = structure.correlated_sets, structure.correlated_size
    if nc:
        uc = u[:, : nc * kc].reshape(-1, nc, kc)
        pc = p[: nc * kc].reshape(nc, kc)[:, 0]
        active = set_u[:, :nc] < pc  # [batch, sets]
        parts.append(jnp.where(active[:, :, None], _value(uc, signed), 0.0)
                     .reshape(-1, nc * kc))
    na, ka = structure.anticorrelated_sets, structure.anticorrelated_size
    if na:
        start = nc * kc
        ua = u[:, start : start + na * ka].reshape(-1, na, ka)
        pa = p[start : start + na * ka].reshape(na, ka)[:, 0]
        s = set_u[:, nc:]  # [batch, sets]
        if structure.anticorrelated_mode == "paper":
            active = s < pa
            # Given activity, s / p is uniform on [0, 1): it picks the one member that fires.
            member = jnp.floor(jnp.where(active, s / pa, 0.0) * ka).astype(jnp.int32)
            fire = active[:, :, None] & (member[:, :, None] == jnp.arange(ka))
        else:  # arena pairs: feature 2k fires iff s <= p, feature 2k+1 iff 1 - s <= p
            fire = jnp.stack([s <= pa, 1.0 - s <= pa], axis=-1)
        parts.append(jnp.where(fire, _value(ua, signed), 0.0).reshape(-1, na * ka))
    rest = structure.n_structured
    if rest < structure.n_features:
        ur, pr = u[:, rest:], p[rest:]
        parts.append(jnp.where(ur < pr, _value(ur / pr, signed), 0.0))
    return jnp.concatenate(parts, axis=1)


def sample_features(
    key: Array, feature_probability: Array, batch_size: int, structure: FeatureStructure,
    signed: bool = False,
) -> Array:
    """Convenience: draw and build one instance's batch ``[batch, n]`` in one call."""
    return features_from_uniforms(
        draw_uniforms(key, batch_size, structure), feature_probability, structure, signed
    )


@dataclass(frozen=True)
class DataPlan:
    """How a sweep's compiled program draws its data: backend, sharing and layout, decided once.

    Build it with :meth:`create` (or :attr:`bitjax.config.SweepConfig.data_plan`). The
    program sees three stages: :meth:`stream_keys` (once per compiled call: one key per data
    stream), :meth:`step_inputs` (per step: what each instance needs to build its batch) and
    :meth:`features` (inside the per-instance function: the batch itself).

    Attributes:
      structure: the static feature structure.
      batch_size: examples per batch.
      rng_impl: ``"hash"`` (the fused counter hash of :func:`hash_uniform`; the stream keys
        are threefry keys turned into ``uint32[2]`` hash keys) or a :func:`jax.random.key`
        implementation name (``"threefry2x32"``, ``"rbg"``, ``"unsafe_rbg"``).
      shared: instances of one seed read one stream (common random numbers); else one stream
        per instance. With a jax.random backend, a shared draw is made once per stream and
        gathered; the hash is cheap enough that each instance rebuilds it inside its fused
        loss from the shared key (same numbers, no batch in memory).
      feature_major: batches are ``[n, batch]`` instead of ``[batch, n]``. Same maths and,
        from :data:`FEATURE_ORDER_BELOW` features, the same numbers (the hash numbers the
        elements in batch-major order; below it a feature-major batch is its own draw).
        Measured on a 2-core CPU with cache-sized instance groups (experiments.benchmark's
        workloads, instance-steps/s batch-major -> feature-major): n=20, m=5 20,500 ->
        40,100; n=50, m=10 11,000 -> 11,300; n=100, m=20 5,200 -> 5,800; n=200, m=20 2,460
        -> 2,060; n=400, m=30 875 -> 787; for n=5, m=2, 3.5x less CPU time feature-major
        (without groups). Hence feature-major below :data:`FEATURE_MAJOR_BELOW` features.
        Only for independent features with the hash.
      signed: active features are uniform on ``[-1, 1)`` (the computation model's inputs)
        instead of ``[0, 1)``.
    """

    structure: FeatureStructure
    batch_size: int
    rng_impl: str = "hash"
    shared: bool = True
    feature_major: bool = False
    signed: bool = False

    @classmethod
    def create(cls, structure: FeatureStructure, batch_size: int, rng_impl: str = "hash", *,
               shared: bool = True, signed: bool = False) -> DataPlan:
        """The plan for a sweep; the layout follows from the structure and the backend.

        Args:
          structure: the feature structure.
          batch_size: examples per batch.
          rng_impl: ``"hash"`` or a :func:`jax.random.key` implementation name.
          shared: one stream per seed (``True``) or per instance.
          signed: active features uniform on ``[-1, 1)``.

        Returns:
          The plan, with ``feature_major`` chosen by the measured rule above.
        """
        feature_major = (rng_impl == "hash" and structure.independent
                         and structure.n_features < FEATURE_MAJOR_BELOW)
        return cls(structure, batch_size, rng_impl, shared, feature_major, signed)

    @property
    def fused(self) -> bool:
        """Whether batches come from the elementwise hash (built inside the fused step)."""
        return self.rng_impl == "hash"

    @property
    def batch_shape(self) -> tuple[int, int]:
        """The shape of one instance's batch, ``[n, batch]`` or ``[batch, n]``."""
        n, b = self.structure.n_features, self.batch_size
        return (n, b) if self.feature_major else (b, n)

    @property
    def feature_axis(self) -> int:
        """The axis of a batch that indexes features."""
        return 0 if self.feature_major else -1

    def per_feature(self, v: Array) -> Array:
        """A length-``n`` vector shaped to broadcast against one batch."""
        return v[:, None] if self.feature_major else v

    def root_key(self, seed: Array) -> Array:
        """The JAX key of ``seed`` under this backend (the hash starts from threefry keys)."""
        impl = "threefry2x32" if self.fused else self.rng_impl
        return jax.random.key(seed, impl=impl)

    def stream_keys(self, stream_seed: Array, stream_salt: Array) -> Array:
        """One key per data stream: a JAX key, or for the hash its ``uint32[2]`` bits.

        Computed once per compiled call; the per-step keys derive from it cheaply.
        """
        keys = jax.vmap(lambda s, salt: jax.random.fold_in(self.root_key(s), salt))(
            stream_seed, stream_salt)
        if self.fused:
            return jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(keys)
        return keys

    def fold(self, keys: Array, salt: Array | int) -> Array:
        """Per-stream keys for ``salt`` (a step number, or :data:`EVAL_SALT`)."""
        if self.fused:
            return jax.vmap(hash_key, (0, None))(keys, salt)
        return jax.vmap(jax.random.fold_in, (0, None))(keys, salt)

    def step_inputs(self, stream_keys: Array, salt: Array | int, stream: Array) -> Any:
        """What each instance receives to build its batch for ``salt`` (leading axis: instance).

        Args:
          stream_keys: output of :meth:`stream_keys`, ``[S]``.
          salt: the step number (or an evaluation batch index).
          stream: ``[I]`` the stream of each instance.

        Returns:
          Per-instance keys, or (shared streams, jax.random backend) the uniforms drawn once
          per stream and gathered per instance.
        """
        keys = self.fold(stream_keys, salt)
        if self.fused or not self.shared:
            return keys[stream]
        u = jax.vmap(lambda k: draw_uniforms(k, self.batch_size, self.structure))(keys)
        return jax.tree.map(lambda a: a[stream], u)

    def features(self, step_input: Any, feature_probability: Array) -> Array:
        """One instance's batch (:attr:`batch_shape`) from its entry of :meth:`step_inputs`."""
        if self.feature_major:
            n = self.structure.n_features
            u = hash_uniform(step_input, self.batch_shape,
                             order=None if n < FEATURE_ORDER_BELOW else (1, 0))
            p = feature_probability[:, None]
            return jnp.where(u < p, _value(u / p, self.signed), 0.0)
        if isinstance(step_input, dict):
            u = step_input
        else:
            u = draw_uniforms(step_input, self.batch_size, self.structure, fused=self.fused)
        return features_from_uniforms(u, feature_probability, self.structure, self.signed)
