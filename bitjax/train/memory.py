"""What fits on a device: memory budgets, a compiled chunk's needs, and the instance group.

A chunk's working arrays grow with the number of instances trained at once (``[instances,
batch, features]`` per step). When a compiled chunk needs more than the budget, the sweep
is trained ``group`` instances per device at a time inside the same program
(:func:`bitjax.train.program.make_train_chunk`); :func:`fit_group` searches that group size.
Everything here is a pure function of its arguments except :func:`device_budget`, which
asks the devices (and, in a multi-host run, every process) what is free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax

from bitjax import distributed

if TYPE_CHECKING:
    from bitjax.config import SweepConfig

#: Share of the free memory a chunk may take: CPU devices share the host's memory with
#: everything else the process holds, and XLA's memory analysis of a CPU chunk falls short
#: of its real peak (a 10,000-instance n=400 sweep peaked at 22.9 GB of 24 with 90%; a
#: 400,000-instance n=5 sweep, chunks planned at 8.5 GiB on each of 2 devices with 75%,
#: was OOM-killed above 24 GB, and peaked at 18 GB with 50%), accelerators only with other
#: programs. At n=5 most of that shortfall was YNNPACK's packed dot operands, which
#: :func:`chunk_bytes` now counts (:func:`library_scratch_bytes`); the fraction was set
#: before that, so it now leaves such sweeps more headroom than they needed.
CPU_FRACTION = 0.5
ACCELERATOR_FRACTION = 0.9


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest unit that keeps the number readable (``"1.50 GiB"``)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size / 4:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def chunk_bytes(compiled: Any) -> int | None:
    """Bytes per device a compiled program allocates beyond its (donated) arguments.

    Args:
      compiled: a ``jax.stages.Compiled``.

    Returns:
      Temporaries plus the outputs not aliased to donated inputs (XLA's memory analysis),
      plus the largest buffer a YNNPACK fusion of the program allocates for itself
      (:func:`library_scratch_bytes`); ``None`` where the backend gives no memory analysis.
    """
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if ma is None:
        return None
    xla = int(ma.temp_size_in_bytes + max(0, ma.output_size_in_bytes - ma.alias_size_in_bytes))
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001 - a program without its HLO text: XLA's figure alone
        text = None
    return xla + (library_scratch_bytes(text) if isinstance(text, str) else 0)


#: The fusion kind XLA's CPU backend gives the fusions it hands to YNNPACK.
YNN_FUSION_KIND = "__ynn_fusion"
#: YNNPACK pads the columns of a packed dot operand to this multiple (measured with jaxlib
#: 0.10.2 on an AVX-512 Xeon: a batched ``[b, n, k] f32`` operand of n = 5, 7, 9, 12, 13, 15,
#: 16 was packed into ``b * k * align(n, 4) * 4`` bytes, each the size of one allocation).
YNN_ALIGN_N = 4

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
             "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\](?:\{([\d,]*)[^}]*\})?")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\S+)\s+(\w[\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*->.*\{$")
_FUSION_CALL = re.compile(r"\bcalls=%([\w.\-]+)")
_DIMS = r"={([\d,]*)}"


def _shape(text: str) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """``(dtype, dims, layout)`` of an HLO array shape (``f32[2,5]{1,0}``); layout minor first."""
    m = _SHAPE.fullmatch(text)
    if m is None:
        return None
    dims = tuple(int(d) for d in m.group(2).split(",") if d)
    layout = tuple(int(d) for d in (m.group(3) or "").split(",") if d)
    return m.group(1), dims, layout or tuple(reversed(range(len(dims))))


def _dims_of(attrs: str, name: str) -> tuple[int, ...]:
    m = re.search(name + _DIMS, attrs)
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def packed_rhs_bytes(rhs: str, batch_dims: tuple[int, ...],
                     contracting_dims: tuple[int, ...]) -> int:
    """Bytes YNNPACK packs a dot's right operand into, if it must; 0 if it reads it in place.

    A right operand whose minor-most (contiguous) dimension is contracted is "transposed"
    for YNNPACK, which then always packs it (``should_pack_b``): for every batch element, its
    ``k`` contracted values times its ``n`` free ones padded to :data:`YNN_ALIGN_N`. The
    pack is made for the whole batch before the dot runs and freed after it. An operand
    with a free dimension minor-most is packed only where the other operand is over ten
    kernel blocks tall (otherwise read in place); in this library's dots such an operand
    is a weight matrix, a small share of the other operand, and is not counted.

    Args:
      rhs: the operand's HLO shape, ``f32[I,5,1024]{2,1,0}``.
      batch_dims, contracting_dims: the dot's ``rhs_batch_dims`` and
        ``rhs_contracting_dims``.
    """
    shape = _shape(rhs)
    if shape is None or shape[0] not in _ITEMSIZE or not shape[1] or not contracting_dims:
        return 0
    dtype, dims, layout = shape
    if layout[0] not in contracting_dims:
        return 0
    free = [d for d in range(len(dims)) if d not in batch_dims and d not in contracting_dims]
    n = math.prod(dims[d] for d in free)
    return (_ITEMSIZE[dtype] * math.prod(dims[d] for d in batch_dims)
            * math.prod(dims[d] for d in contracting_dims) * (-(-n // YNN_ALIGN_N) * YNN_ALIGN_N))


def library_scratch_bytes(hlo_text: str) -> int:
    """The largest buffer a YNNPACK fusion of an optimised HLO module allocates for itself.

    XLA's CPU backend hands some fusions (batched dots among them) to YNNPACK, whose
    packed operands live outside XLA's buffer assignment, so the memory analysis does not
    count them. Each dot's pack (:func:`packed_rhs_bytes`) lives while that fusion runs;
    a device runs one fusion at a time, so the largest is what its peak gains. For the
    dense+ternary n=5 sweep on 2 CPU devices (batch 1024) it is ``[instances, 1024, 8]``
    float32, 32 KiB per instance, next to about 70 KiB of XLA temporaries.

    Args:
      hlo_text: ``compiled.as_text()``.

    Returns:
      Bytes (0: no YNNPACK dot that packs an operand).
    """
    # Computations: a header line "%name (params) -> shape {", instructions, "}".
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    ynn_called: list[str] = []
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = computations.setdefault(header.group(1), [])
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is not None:
            current.append(line)
            if YNN_FUSION_KIND in line and " fusion(" in line:
                call = _FUSION_CALL.search(line)
                if call:
                    ynn_called.append(call.group(1))
    largest = 0
    for name in ynn_called:
        shapes: dict[str, str] = {}
        for line in computations.get(name, ()):
            m = _INSTRUCTION.match(line)
            if m is None:
                continue
            shapes[m.group(1)] = m.group(2)
            if m.group(3) != "dot":
                continue
            operands = re.findall(r"%([\w.\-]+)", m.group(4).split(")")[0])
            if len(operands) != 2 or operands[1] not in shapes:
                continue
            largest = max(largest, packed_rhs_bytes(
                shapes[operands[1]], _dims_of(m.group(4), "rhs_batch_dims"),
                _dims_of(m.group(4), "rhs_contracting_dims")))
    return largest


def budget_from_free(free: int | None, platform: str) -> int | None:
    """The bytes a chunk may take given ``free`` bytes on a device of ``platform``."""
    if free is None:
        return None
    return int((CPU_FRACTION if platform == "cpu" else ACCELERATOR_FRACTION) * free)


def device_budget(mesh: jax.sharding.Mesh) -> int | None:
    """Bytes per device a compiled chunk may allocate on ``mesh`` (``None``: unknown).

    The free memory of this process's devices (for CPU devices, the host's available memory
    split between them) times :data:`CPU_FRACTION` or :data:`ACCELERATOR_FRACTION`. In a
    multi-host run every process takes the smallest budget of all, so all of them compile
    the same program; it is then a collective that every process must call.
    """
    platform = mesh.devices.flat[0].platform
    budget = budget_from_free(distributed.free_memory_per_device(mesh), platform)
    if budget is None:
        return distributed.min_over_processes(None)
    # Exchanged in KiB: without jax_enable_x64 the gathered integer is int32, and a budget
    # in bytes above 2 GiB would wrap around to a negative number.
    kib = distributed.min_over_processes(budget // 1024)
    return None if kib is None else kib * 1024


def state_bytes_per_instance(state_like: Any) -> int:
    """Bytes of one instance's share of a training state (leaves with an instance axis)."""
    return sum(math.prod(x.shape[1:]) * x.dtype.itemsize
               for x in jax.tree.leaves(state_like) if x.shape)


def check_state_fits(per_instance: int, n_instances: int, instances_per_device: int,
                     n_devices: int, budget: int | None) -> None:
    """Refuse a sweep whose training state alone exceeds the per-device budget.

    Raises:
      MemoryError: naming the sizes and what to do.
    """
    need = per_instance * instances_per_device
    if budget is not None and need > budget:
        raise MemoryError(
            f"the training state of {n_instances} instances needs {format_bytes(need)} per "
            f"device ({per_instance:,} bytes per instance, {instances_per_device} "
            f"instances on each of {n_devices} devices) but the budget is "
            f"{format_bytes(budget)}: use more devices (the instance axis is split over all "
            "of them) or split the sweep into several runs (one per kind or seed, say)")


#: Bytes of one ``[group, batch, width]`` float32 array a CPU step should stream, for a
#: feature-major and a batch-major batch (bitjax.data.DataPlan.feature_major): a step writes
#: and reads several such arrays (the batch, the reconstruction, its error and gradient),
#: and kept small they stay in a core's cache between the fusions instead of going to
#: memory. Measured with experiments.benchmark's workloads (2-core Xeon, 2 MiB L2 per core,
#: 2 CPU devices, batch 1024), instance-steps/s by group. Feature-major, n=20, m=5, 200
#: per device: 2: 51,000; 5: 47,000; 10: 39,000; 25: 29,700; 50: 28,300; n=100, m=20, 10
#: per device: 1: 4,000; 2: 5,500; 5: 4,600. Batch-major, n=200, m=20, 20 per device: 1:
#: 2,240; 2: 2,520; 5: 2,370; n=400, m=30, 20 per device: 1: 850; 2: 910; 3 (one padded):
#: 820; all 20 at once: 516. Before the layout rule moved (feature-major from 128
#: features), n=20 batch-major: all 200 at once 11,200, groups of 5-40 18,500-19,600. No
#: one size is best everywhere; these pick within 25% of the best measured group on every
#: workload above.
CPU_CACHE_BYTES = {True: 1 << 20, False: 4 << 20}


def cache_group(batch_size: int, width: int, instances_per_device: int,
                feature_major: bool = False) -> int | None:
    """Instances per device to train at a time on a CPU so that one ``[group, batch_size,
    width]`` float32 array is about :data:`CPU_CACHE_BYTES` of the batch's layout.

    Args:
      batch_size: the batch of a step.
      width: the widest per-example activation (features or hidden units).
      instances_per_device: instances each device holds.
      feature_major: the batch's layout (bitjax.data.DataPlan.feature_major).

    Returns:
      ``None`` where every instance of a device fits at once; else a group between half the
      size that fits and that size, the one that pads the last group least (a padded
      instance is trained and thrown away), the larger on a tie.
    """
    per = 4 * int(batch_size) * int(width)
    top = max(1, CPU_CACHE_BYTES[bool(feature_major)] // per)
    n = int(instances_per_device)
    if top >= n:
        return None
    return min(range(max(1, (top + 1) // 2), top + 1), key=lambda g: (-(-n // g) * g - n, -g))


def next_group(group: int, need: int, budget: int) -> int:
    """A smaller group to try after ``group`` instances needed ``need`` > ``budget`` bytes.

    Memory grows about linearly with the group, so scale it by ``budget / need``; always
    shrink by at least one so the search ends.
    """
    return max(1, min(group - 1, int(group * budget / need)))


@dataclass(frozen=True)
class GroupFit:
    """The outcome of :func:`fit_group`."""

    compiled: Any  #: the program that fits (the first one, if it already fitted)
    group: int | None  #: instances per device at a time (``None``: all, unchanged)
    first_need: int | None  #: bytes the first program needed
    need: int | None  #: bytes the chosen program needs
    budget: int | None
    first_group: int | None = None  #: the group the first program had (``None``: all)

    @property
    def regrouped(self) -> bool:
        """Whether the first program was over budget and a smaller group was chosen."""
        return (self.budget is not None and self.first_need is not None
                and self.first_need > self.budget)


def fit_group(compile_group: Callable[[int | None], Any], group: int | None,
              instances_per_device: int, budget: int | None, *,
              n_steps: int | None = None) -> GroupFit:
    """Compile with ``group``, then with smaller groups until the program fits ``budget``.

    Args:
      compile_group: ``group -> compiled program`` (``None``: every instance at once).
      group: the group to start from (``None``: all ``instances_per_device``).
      instances_per_device: instances each device holds.
      budget: bytes per device allowed (``None``: no limit).
      n_steps: the chunk length, for the error message.

    Returns:
      The fitting program and its group.

    Raises:
      MemoryError: even one instance at a time needs more than ``budget``.
    """
    compiled = compile_group(group)
    need = chunk_bytes(compiled)
    if budget is None or need is None or need <= budget:
        return GroupFit(compiled, group, need, need, budget)
    first_need, size = need, group or instances_per_device
    while need > budget:
        if size == 1:
            steps = "" if n_steps is None else f" for a chunk of {n_steps} steps"
            raise MemoryError(
                f"one instance of this sweep needs {format_bytes(need)} per device{steps} "
                f"but the budget is {format_bytes(budget)}: lower batch_size (or "
                "n_features), or give Trainer a larger memory_budget")
        size = next_group(size, need, budget)
        compiled = compile_group(size)
        need = chunk_bytes(compiled)
    return GroupFit(compiled, size, first_need, need, budget, group)


def grouping_notice(fit: GroupFit, instances_per_device: int) -> str:
    """The human-readable notice that a sweep is trained in groups (for ``on_event``)."""
    n_groups = -(-instances_per_device // fit.group)
    first = (f"all {instances_per_device}" if fit.first_group is None
             else f"{fit.first_group} of the {instances_per_device}")
    return (f"bitjax: training {first} instances per device at once "
            f"needs {format_bytes(fit.first_need)} per device, over the budget of "
            f"{format_bytes(fit.budget)}; training them in {n_groups} groups of {fit.group} "
            f"instead ({format_bytes(fit.need)}; one compiled program, the same training up "
            "to float round-off)")


#: Host bytes one instance costs outside the compiled program, whatever its size: its
#: coordinates, checkpoint metadata (JSON lists), diagnostics and the analysis's per-instance
#: values. Measured with the peak RSS of run_sweep at 5,000 and 40,000 instances (n=5, m=2:
#: 4.9 KiB per instance with batch 32, of which about 1.9 KiB is the batch that the planner
#: groups; n=20, m=5 with 100 history points: 13.1 KiB, 7.7 KiB of it the batch) and rounded up.
HOST_FIXED_BYTES = 4096
#: Copies of each parameter (weights, Adam moments, gradients, host copies for checkpoints)
#: and of each loss-history point that live on the host; float32.
HOST_COPIES = 3
#: Share of the host's available memory a sweep may plan to take.
HOST_FRACTION = 0.8


def n_params(n_features: int, n_hidden: int, model: str = "tied") -> int:
    """Parameters of one instance, a learned scale per weight matrix included.

    The tied layout (``tied``, ``relu_hidden``): ``W [m, n]``, ``b [n]``, one scale. The
    computation model (``abs_computation``): ``W1 [m, n]``, ``W2 [n, m]``, ``b1 [m]``,
    ``b2 [n]``, two scales.
    """
    if model == "abs_computation":
        return 2 * n_hidden * n_features + n_hidden + n_features + 2
    return n_hidden * n_features + n_features + 1


def host_bytes_per_instance(n_features: int, n_hidden: int, n_history: int,
                            model: str = "tied") -> int:
    """Host bytes one instance needs outside the compiled chunk (see :data:`HOST_FIXED_BYTES`).

    The analysis's per-feature pair quantities (``W^T W``, ``[n, n]`` per instance, in
    float64 with two temporaries) are included, so the estimate covers loading the run and
    writing its tables too.

    Args:
      n_features, n_hidden: the model's sizes.
      n_history: loss-history points per instance.
      model: the model family (``SweepConfig.model``; :func:`n_params`).

    Returns:
      Bytes.
    """
    params = n_params(n_features, n_hidden, model)
    return (HOST_FIXED_BYTES + 4 * HOST_COPIES * (params + n_history)
            + 3 * 8 * n_features * n_features)


def check_sweep_fits_host(cfg: SweepConfig) -> None:
    """:func:`check_host_fits` for the sweep ``cfg`` on this host's available memory."""
    check_host_fits(cfg.n_instances, host_bytes_per_instance(
        cfg.n_features, cfg.n_hidden, cfg.n_history, cfg.model),
        distributed.host_available_bytes())


def check_host_fits(n_instances: int, per_instance: int, available: int | None) -> None:
    """Refuse, before anything is allocated, a sweep the host's memory will not hold.

    A sweep that does not fit would otherwise grow until the machine swaps or the kernel
    kills it, and acts on signals only between long allocations; refusing it up front costs
    nothing. (The compiled chunk's own arrays are planned separately: :func:`fit_group`.)

    Args:
      n_instances: instances in the sweep.
      per_instance: :func:`host_bytes_per_instance`.
      available: the host's available bytes (None: unknown, nothing is refused).

    Raises:
      MemoryError: naming the need, what is available and how many instances would fit.
    """
    need = n_instances * per_instance
    if available is None or need <= HOST_FRACTION * available:
        return
    fits = int(HOST_FRACTION * available // per_instance)
    raise MemoryError(
        f"the sweep's {n_instances:,} instances need about {format_bytes(need)} of host memory "
        f"(about {format_bytes(per_instance)} each for coordinates, checkpoints and analysis)"
        f" and {format_bytes(available)} is available: split it into runs of at most "
        f"{fits:,} instances (fewer seeds or settings per run), or use a machine with more "
        "memory")
