"""A check, on a CPU-only machine, for the bug that crashes GPU trials: a tensor made on the CPU meeting
one on the GPU. Tests train on PyTorch's `meta` device under `OneDevice`, which fails any operation whose
tensors live on more than one device, as CUDA kernels do (the meta device alone lets some through,
e.g. a gather with a CPU index)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Operations CUDA runs with CPU index tensors: advanced indexing copies its indices to the device.
_CPU_INDEX_OK = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default}


class MixedDevices(RuntimeError):
    pass


class OneDevice(TorchDispatchMode):
    """Raise MixedDevices on an aten operation whose tensor arguments live on several devices.

    A 0-dimensional CPU tensor may meet any device (PyTorch treats it as a scalar), and so may the
    CPU index tensors of advanced indexing; copies (`.to`, `copy_`) move between devices by design."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if func in _CPU_INDEX_OK:
                tensors = tensors[:1] + [t for t in tensors[1:] if t.device.type != "cpu"]
            devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
            if len(devices) > 1:
                shapes = ", ".join(f"{t.device.type}{list(t.shape)}" for t in tensors)
                raise MixedDevices(f"{func} got tensors on {sorted(devices)}: {shapes}")
        return func(*args, **kwargs)
