"""Sharding the instance axis over 8 fake CPU devices.

Each check runs in a subprocess because the device count is fixed when JAX starts
(``--xla_force_host_platform_device_count``). Tolerance: sharded and unsharded training
run the same per-instance arithmetic, so they agree to float32 round-off (atol 1e-6 after
300 steps; in practice they are usually bitwise equal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

TRAIN = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from bitjax import distributed
    from bitjax.store.checkpoint import Checkpointer
    from bitjax.config import SweepConfig
    from bitjax.train.trainer import Trainer
    out, n_dev, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    group = int(sys.argv[4]) if len(sys.argv) > 4 else None  # instances per device at a time
    # 14 instances: padded to 16 on 8 devices, to 15 on 3.
    cfg = SweepConfig(n_features=6, n_hidden=2, kind=("dense", "ternary"), seed=(0,),
                      feature_probability=(1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01),
                      importance=(0.9,), steps=300, batch_size=128, chunk_size=100,
                      history_every=50)
    tr = Trainer(cfg, mesh=distributed.make_mesh(n_dev), group_size=group)
    state = tr.init_state()
    ck = Checkpointer(out, every=100)
    meta = {"config": cfg.to_dict(), "n_instances": tr.n_instances}
    if mode == "resume":
        host, _ = ck.restore_latest()
        state = tr.from_host(host)
    state = tr.run(state, until=200 if mode == "half" else 300,
                   on_chunk=lambda s, info: ck.maybe_save(info.step, s, meta))
    host = tr.to_host(state)
    loss = tr.evaluate(state)
    np.savez(out + f"/result_{mode}_{n_dev}.npz", W=host["params"]["W"], b=host["params"]["b"],
             history=host["history"], loss=loss)
    print(json.dumps({"devices": jax.device_count(), "mesh": tr.mesh.size, "group": tr.group,
                      "n": tr.n_instances, "padded": tr.n_padded,
                      "shard_shapes": sorted({tuple(s.data.shape) for s in
                                              state["params"]["W"].addressable_shards})}))
""")


def _run(code: str, *args, devices: int = 8) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_sharded_equals_unsharded_and_padding_never_leaks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    info8 = _run(TRAIN, a, 8, "full")
    info1 = _run(TRAIN, b, 1, "full")
    assert info1["mesh"] == 1 and info1["padded"] == 14
    assert info8["devices"] == 8 and info8["mesh"] == 8
    assert info8["n"] == 14 and info8["padded"] == 16
    assert info8["shard_shapes"] == [[2, 2, 6]]  # 16 padded instances, 2 per device
    r8 = np.load(a / "result_full_8.npz")
    r1 = np.load(b / "result_full_1.npz")
    for k in ("W", "b", "history", "loss"):
        assert r8[k].shape[0] == 14, k  # padding dropped from every output
        np.testing.assert_allclose(r8[k], r1[k], atol=1e-6, rtol=1e-6, err_msg=k)


@pytest.mark.integration
def test_checkpoint_written_on_8_devices_restores_on_3_and_loads_on_1(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _run(TRAIN, run, 8, "half")  # stops at step 200, checkpoint on 8 devices
    # 3 devices: 14 instances padded to 15, 5 per device trained in groups of 2 (the last
    # group padded inside the program): neither the device count nor grouping is part of
    # the checkpoint, and neither changes the result.
    info = _run(TRAIN, run, 3, "resume", 2)
    assert info["group"] == 2 and info["padded"] == 15
    ref = tmp_path / "ref"
    ref.mkdir()
    _run(TRAIN, ref, 8, "full")
    resumed = np.load(run / "result_resume_3.npz")
    straight = np.load(ref / "result_full_8.npz")
    np.testing.assert_allclose(resumed["W"], straight["W"], atol=1e-6, rtol=1e-6)
    load = textwrap.dedent("""
        import json, sys
        import bitjax
        s = bitjax.load_sweep(sys.argv[1])
        print(json.dumps({"step": s.step, "shape": list(s.W.shape)}))
    """)
    info = _run(load, run, devices=1)
    assert info == {"step": 300, "shape": [14, 2, 6]}
