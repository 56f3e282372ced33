"""A PyTorch re-implementation of the reference training loop, for timing on this machine.

It does what the paper's notebook does: the instances are a leading
tensor axis of one model, every iteration is one Python step (fresh batch from two
``torch.rand`` draws, forward, backward, AdamW), batch 1024. Only used by
``python -m experiments.benchmark --reference``, so that the speed ratio is measured on the
same machine in the same run; needs ``pip install torch`` (not a bitjax dependency).
"""

from __future__ import annotations

import time


def time_reference(n_features: int, n_hidden: int, n_instances: int, *,
                   batch_size: int = 1024, steps: int = 50, warmup: int = 5,
                   device: str | None = None, min_seconds: float = 1.0) -> dict:
    """Steps/s of the reference loop for one workload (dense, uniform importance).

    Args:
      n_features, n_hidden, n_instances: the workload.
      batch_size: samples per step.
      steps: steps timed at first; doubled (up to 64x) until the timing lasts
        ``min_seconds``, so a fast accelerator is not timed over a few milliseconds.
      warmup: untimed steps first.
      device: torch device; default CUDA when torch sees a GPU (the notebook trains there),
        else the CPU.
      min_seconds: shortest timing accepted.

    Returns:
      ``steps_per_s``, ``instance_steps_per_s``, ``torch`` (version), ``threads`` and
      ``device``.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.empty(n_instances, n_features, n_hidden, device=device))
    torch.nn.init.xavier_normal_(w)
    b = torch.nn.Parameter(torch.zeros(n_instances, n_features, device=device))
    opt = torch.optim.AdamW([w, b], lr=1e-3)
    # feature probability per instance
    prob = torch.logspace(0, -2, n_instances, device=device)[:, None]
    importance = torch.ones(n_features, device=device)
    zero = torch.zeros((), device=device)

    def step():
        feat = torch.rand(batch_size, n_instances, n_features, device=device)
        x = torch.where(torch.rand(batch_size, n_instances, n_features, device=device) <= prob,
                        feat, zero)
        h = torch.einsum("bif,ifh->bih", x, w)
        out = torch.relu(torch.einsum("bih,ifh->bif", h, w) + b)
        loss = (importance * (x - out) ** 2).mean(dim=(0, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    for _ in range(7):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            break
        steps *= 2
    return {"steps_per_s": steps / dt, "instance_steps_per_s": steps * n_instances / dt,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}
