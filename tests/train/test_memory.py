"""bitjax.train.memory: what fits. The host's share (a sweep the host cannot hold is refused
before anything is allocated) and the pure pieces of the device budget (fitting a group,
budget fractions, the state check, the free memory). The compiled chunk's grouping is
tested in train/test_trainer.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bitjax import distributed
from bitjax.config import SweepConfig
from bitjax.train import memory


def test_host_estimate_grows_with_the_model_and_the_history():
    small = memory.host_bytes_per_instance(5, 2, 1)
    assert small >= memory.HOST_FIXED_BYTES
    assert memory.host_bytes_per_instance(20, 5, 100) > small
    assert memory.host_bytes_per_instance(5, 2, 1000) - small == \
        4 * memory.HOST_COPIES * 999


def test_a_sweep_within_the_host_passes_and_one_beyond_is_refused_with_what_fits():
    memory.check_host_fits(1000, 5000, available=10**9)
    memory.check_host_fits(10**9, 5000, available=None)  # unknown: nothing refused
    with pytest.raises(MemoryError, match=r"8,000,000 instances need about .* runs of at "
                                          r"most 160,000 instances"):
        memory.check_host_fits(8_000_000, 5000, available=10**9)


def test_run_sweep_refuses_a_huge_sweep_at_once_and_writes_nothing(tmp_path, monkeypatch):
    from bitjax.train.run import run_sweep

    monkeypatch.setattr(distributed, "host_available_bytes", lambda: 2 * 2**30)
    cfg = SweepConfig(n_features=5, n_hidden=2, seed=tuple(range(2000)),
                      feature_probability=tuple(np.linspace(0.01, 1, 400)), steps=100,
                      chunk_size=100, history_every=100)
    assert cfg.n_instances == 800_000
    with pytest.raises(MemoryError, match="host memory"):
        run_sweep(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused from the config alone


def test_the_command_refuses_it_in_one_line_with_exit_2_before_writing(tmp_path, monkeypatch,
                                                                       capsys):
    from experiments import _cli, uniform

    monkeypatch.setattr(distributed, "host_available_bytes", lambda: 2**10)
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "of host memory" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "r").exists()


class _Compiled:
    """A stand-in for a compiled program whose memory analysis says ``need`` bytes."""

    def __init__(self, need: int):
        self.need = need

    def memory_analysis(self):
        class MA:
            temp_size_in_bytes = self.need
            output_size_in_bytes = 100
            alias_size_in_bytes = 100

        return MA()


def test_fit_group_shrinks_in_proportion_until_it_fits():
    # need grows linearly: 1,000 bytes per instance in a group.
    tried = []

    def compile_group(group):
        tried.append(group)
        return _Compiled(1_000 * (group or 40))

    fit = memory.fit_group(compile_group, None, 40, budget=9_500)
    assert fit.regrouped and fit.group == 9 and fit.need == 9_000 and fit.first_need == 40_000
    assert tried == [None, 9]
    assert "training them in 5 groups of 9" in memory.grouping_notice(fit, 40)
    unchanged = memory.fit_group(compile_group, None, 40, budget=None)
    assert not unchanged.regrouped and unchanged.group is None


def test_a_regrouping_from_a_cache_group_says_where_it_started():
    fit = memory.fit_group(lambda g: _Compiled(1_000 * (g or 40)), 20, 40, budget=9_500)
    assert fit.first_group == 20 and fit.group == 9
    assert memory.grouping_notice(fit, 40).startswith(
        "bitjax: training 20 of the 40 instances per device at once needs ")


@pytest.mark.parametrize("batch, width, per_device, fm, want", [
    (1024, 20, 200, True, 10),    # 80 KiB per instance: 12 fit 1 MiB; 10 divides 200
    (1024, 100, 10, True, 2),     # 400 KiB: 2 fit and divide 10
    (1024, 400, 20, False, 2),    # batch-major, 1.6 MiB: 2 fit 4 MiB
    (1024, 200, 20, False, 5),    # 800 KiB: 5 fit; of 3..5, 4 and 5 divide 20: the larger
    (1024, 5, 5, True, None),     # every instance of the device fits at once
    (1024, 100, 7, True, 1),      # 2 fit; 7 in groups of 2 pads one, in groups of 1 none
    (256, 20, 1000, True, 50),    # 20 KiB: 51 fit; of 26..51, 40 and 50 divide 1000
])
def test_the_cache_group_keeps_one_array_near_the_target(batch, width, per_device, fm, want):
    assert memory.cache_group(batch, width, per_device, fm) == want


def test_fit_group_always_shrinks_and_stops_at_one():
    # need does not fall with the group: the search must still end, at group 1.
    seen = []

    def compile_group(group):
        seen.append(group)
        return _Compiled(10_000)

    with pytest.raises(MemoryError, match="one instance .* for a chunk of 7 steps"):
        memory.fit_group(compile_group, 4, 4, budget=9_999, n_steps=7)
    assert seen == [4, 3, 2, 1]


def test_budget_fractions_and_state_check():
    assert memory.budget_from_free(1000, "cpu") == 500
    assert memory.budget_from_free(1000, "gpu") == 900
    assert memory.budget_from_free(None, "cpu") is None
    memory.check_state_fits(100, 10, 5, 2, budget=500)  # exactly fits
    with pytest.raises(MemoryError, match=r"needs 0.59 KiB per device \(100 bytes per "
                                          r"instance, 6 instances on each of 2 devices"):
        memory.check_state_fits(100, 12, 6, 2, budget=500)
    assert memory.format_bytes(3 * 2**30) == "3.00 GiB" and memory.format_bytes(10) == "10 bytes"


def test_free_memory_is_known():
    mesh = distributed.make_mesh(1)
    free = distributed.free_memory_per_device(mesh)
    assert free is not None and free > 0
    if mesh.devices.flat[0].platform == "cpu":  # CPU devices share the host's memory
        # Against the host's total, not a second reading of what is available: other
        # processes allocate between two readings (the old comparison failed that way).
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        assert free <= total
    budget = memory.device_budget(mesh)
    assert 0 < budget < free


@pytest.mark.parametrize("model", ["tied", "relu_hidden", "abs_computation"])
def test_the_parameter_count_is_each_models_own(model):
    import jax
    import jax.numpy as jnp

    from bitjax import layers

    n, m = 7, 3
    cls = layers.MODEL_CLASSES[model]
    net = cls(n_features=n, n_hidden=m, quantizers=("ternary_lsq",), learnable_scale=True)
    params = net.init(jax.random.key(0), jnp.zeros((1, n)), 0)["params"]
    count = sum(x.size for x in jax.tree.leaves(params))  # with every learned scale
    assert memory.n_params(n, m, model) == count
    # the computation model's second matrix and biases count on the host too
    extra = memory.host_bytes_per_instance(n, m, 10, model) - \
        memory.host_bytes_per_instance(n, m, 10)
    assert extra == 4 * memory.HOST_COPIES * (count - (m * n + n + 1))
    if model == "abs_computation":
        assert count == 2 * m * n + m + n + 2 and extra > 0


# An optimised CPU module in the form compiled.as_text() prints: the weight-gradient dot of
# the n=5, m=2 model (x [I, 5, batch] contracted over the batch, its minor dimension) as a
# YNNPACK fusion, a forward dot whose right operand is read in place, and the same
# transposed dot as an ordinary (non-YNNPACK) fusion.
_YNN = ('backend_config={"fusion_config":{"kind":"__ynn_fusion"},'
        '"outer_dimension_partitions":[]}')
_BATCHED = "lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, "
_HLO = "\n".join([
    "HloModule jit__train_chunk, is_scheduled=true",
    "",
    "%fused_computation.16 (param_0.19: f32[200,2,1024], param_1.25: f32[200,5,1024]) -> "
    "f32[200,2,5] {",
    "  %param_0.19 = f32[200,2,1024]{2,1,0} parameter(0)",
    "  %param_1.25 = f32[200,5,1024]{2,1,0} parameter(1)",
    "  ROOT %dot.112 = f32[200,2,5]{2,1,0} dot(%param_0.19, %param_1.25), " + _BATCHED
    + 'rhs_contracting_dims={2}, metadata={op_name="dot_general"}',
    "}",
    "",
    "%fused_computation.17 (param_0.20: f32[200,2,5], param_1.26: f32[200,5,1024]) -> "
    "f32[200,2,1024] {",
    "  %param_0.20 = f32[200,2,5]{2,1,0} parameter(0)",
    "  %param_1.26 = f32[200,5,1024]{2,1,0} parameter(1)",
    "  ROOT %dot.113 = f32[200,2,1024]{2,1,0} dot(%param_0.20, %param_1.26), " + _BATCHED
    + "rhs_contracting_dims={1}",
    "}",
    "",
    "%fused_computation.18 (param_0.21: f32[300,2,1024], param_1.27: f32[300,9,1024]) -> "
    "f32[300,2,9] {",
    "  %param_0.21 = f32[300,2,1024]{2,1,0} parameter(0)",
    "  %param_1.27 = f32[300,9,1024]{2,1,0} parameter(1)",
    "  ROOT %dot.114 = f32[300,2,9]{2,1,0} dot(%param_0.21, %param_1.27), " + _BATCHED
    + "rhs_contracting_dims={2}",
    "}",
    "",
    "ENTRY %main.1 (a.1: f32[200,2,1024], b.1: f32[200,5,1024], w.1: f32[200,2,5], "
    "c.1: f32[300,2,1024], d.1: f32[300,9,1024]) -> (f32[200,2,5], f32[200,2,1024], "
    "f32[300,2,9]) {",
    "  %a.1 = f32[200,2,1024]{2,1,0} parameter(0)",
    "  %b.1 = f32[200,5,1024]{2,1,0} parameter(1)",
    "  %w.1 = f32[200,2,5]{2,1,0} parameter(2)",
    "  %c.1 = f32[300,2,1024]{2,1,0} parameter(3)",
    "  %d.1 = f32[300,9,1024]{2,1,0} parameter(4)",
    "  %ynn_fusion.16 = f32[200,2,5]{2,1,0} fusion(%a.1, %b.1), kind=kCustom, "
    "calls=%fused_computation.16, " + _YNN,
    "  %ynn_fusion.17 = f32[200,2,1024]{2,1,0} fusion(%w.1, %b.1), kind=kCustom, "
    "calls=%fused_computation.17, " + _YNN,
    "  %dot_fusion = f32[300,2,9]{2,1,0} fusion(%c.1, %d.1), kind=kOutput, "
    "calls=%fused_computation.18",
    "  ROOT %tuple = (f32[200,2,5]{2,1,0}, f32[200,2,1024]{2,1,0}, f32[300,2,9]{2,1,0}) "
    "tuple(%ynn_fusion.16, %ynn_fusion.17, %dot_fusion)",
    "}",
    ""])


def test_a_ynnpack_dot_counts_its_packed_operand_in_exact_bytes():
    # x [200, 5, 1024] contracted over its minor dimension: packed as 200 x 1024 x 8 floats
    # (5 columns padded to 8); the forward dot reads x in place; the 300-instance dot is
    # XLA's own fusion (its buffers are in the memory analysis), so it adds nothing.
    assert memory.library_scratch_bytes(_HLO) == 200 * 1024 * 8 * 4 == 6_553_600
    assert memory.packed_rhs_bytes("f32[300,9,1024]{2,1,0}", (0,), (2,)) == 300 * 1024 * 12 * 4
    assert memory.packed_rhs_bytes("f32[300,9,1024]{2,1,0}", (0,), (1,)) == 0
    assert memory.packed_rhs_bytes("bf16[7,16,64]{2,1,0}", (0,), (2,)) == 7 * 64 * 16 * 2
    # the same dims with the contracted dimension not minor-most (layout {1,2,0}): in place
    assert memory.packed_rhs_bytes("f32[300,9,1024]{1,2,0}", (0,), (2,)) == 0
    assert memory.library_scratch_bytes(_HLO.replace("__ynn_fusion", "__other")) == 0

    class WithText(_Compiled):
        def as_text(self):
            return _HLO

    # XLA's temporaries plus unaliased outputs (1,000 + 0), then the largest pack.
    assert memory.chunk_bytes(WithText(1_000)) == 1_000 + 6_553_600
    assert memory.chunk_bytes(_Compiled(1_000)) == 1_000  # no HLO text: XLA's figure


def test_a_compiled_batched_dot_is_planned_with_its_pack():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda a, b: jnp.einsum("ibk,ink->ibn", a, b))
    compiled = f.lower(jax.ShapeDtypeStruct((6, 2, 1024), jnp.float32),
                       jax.ShapeDtypeStruct((6, 5, 1024), jnp.float32)).compile()
    text = compiled.as_text()
    if memory.YNN_FUSION_KIND not in text:
        pytest.skip("this backend hands no dot to YNNPACK")
    assert memory.library_scratch_bytes(text) == 6 * 1024 * 8 * 4
    ma = compiled.memory_analysis()
    assert memory.chunk_bytes(compiled) == (ma.temp_size_in_bytes + ma.output_size_in_bytes
                                            - ma.alias_size_in_bytes + 6 * 1024 * 8 * 4)
