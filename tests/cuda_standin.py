"""A CUDA stand-in: code written for device "cuda" runs end to end on a CPU-only machine, and every
torch.cuda call it makes is checked the way torch.cuda checks it.

The meta-device tests (tests/device_check.py) catch a tensor left on the wrong device; they cannot
catch a CUDA call made wrongly, because no CPU test ever makes one. This module replaces torch.cuda's
calls (set_device, Stream, Event, stream, current_stream, synchronize, memory caps and stats, RNG
state) by stand-ins that validate their arguments with torch's own `_get_device_index` and its range
and type checks, then do nothing. Tensors and modules sent to "cuda" stay on the CPU, pinned memory is
plain memory, and autocast and GradScaler for "cuda" run as the CPU's.

The patch is global (module attributes), not a TorchFunctionMode: the ASC data path feeds the GPU from
a thread of its own, and modes are per thread. A process started with this folder's `standin_site`
on PYTHONPATH and KD_SEARCH_CUDA_STANDIN=1 installs it as torch is imported (sitecustomize), Ray's workers too,
so a whole `search/run.py` runs against one fake GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.cuda._utils import _get_device_index

ENV = "KD_SEARCH_CUDA_STANDIN"  # "1" (or a device count) installs the stand-in at interpreter start
LOG_ENV = "KD_SEARCH_CUDA_STANDIN_LOG"  # a folder: each process appends the devices it selects to <pid>.log there
MEMORY = 16 * 2**30  # what the fake GPU reports as its memory
NAME = "CUDA stand-in"

_FACTORIES = ("empty", "zeros", "ones", "full", "arange", "tensor", "as_tensor", "rand", "randn", "randint",
              "randperm", "linspace", "logspace", "eye", "empty_like", "zeros_like", "ones_like", "full_like",
              "rand_like", "randn_like", "randint_like", "empty_strided")  # fmt: skip


class StandIn:
    """The fake GPUs' state: how many there are, each thread's current device and stream, each device's RNG."""

    def __init__(self, devices: int):
        self.devices = devices
        self.local = threading.local()
        self.generators = [torch.Generator().manual_seed(0) for _ in range(devices)]
        self.memory_fractions: dict[int, float] = {}

    def index(self, device: Any, optional: bool = False) -> int:
        """torch's own device-index rules (an index-less device is refused unless `optional`), then the range."""
        index = _get_device_index(device, optional=optional)
        if not 0 <= index < self.devices:
            raise RuntimeError(f"CUDA error: invalid device ordinal (device {index} of {self.devices})")
        return index

    def host(self, device: Any) -> Any:
        """The CPU for a CUDA device (checked as CUDA would check it); any other device as it is."""
        if isinstance(device, str) and device.startswith("cuda"):
            device = torch.device(device)
        if isinstance(device, torch.device) and device.type == "cuda":
            self.index(device, optional=True)
            return torch.device("cpu")
        return device

    @property
    def current(self) -> int:
        return getattr(self.local, "device", 0)


_STATE: StandIn | None = None
_SAVED: list[tuple[Any, str, Any]] = []


def _state() -> StandIn:
    assert _STATE is not None, "the CUDA stand-in is not installed"
    return _STATE


class Stream:
    """torch.cuda.Stream's surface: made for a device (index optional), waits on events and streams."""

    def __init__(self, device: Any = None, priority: int = 0, **_: Any):
        self.device_index = _state().index(device, optional=True)
        self.priority = priority

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.device_index)

    def wait_event(self, event: "Event") -> None:
        if not isinstance(event, Event):
            raise TypeError(f"wait_event expects a torch.cuda.Event, got {type(event).__name__}")

    def wait_stream(self, stream: "Stream") -> None:
        if not isinstance(stream, Stream):
            raise TypeError(f"wait_stream expects a torch.cuda.Stream, got {type(stream).__name__}")

    def record_event(self, event: "Event | None" = None) -> "Event":
        event = event or Event()
        event.record(self)
        return event

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


class Event:
    """torch.cuda.Event's surface: recorded on a stream, then waited on or queried."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing
        self.recorded = False

    def record(self, stream: Stream | None = None) -> None:
        if stream is None:
            stream = current_stream()
        if not isinstance(stream, Stream):
            raise TypeError(f"Event.record expects a torch.cuda.Stream, got {type(stream).__name__}")
        self.recorded = True

    def wait(self, stream: Stream | None = None) -> None:
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"Event.wait expects a torch.cuda.Stream, got {type(stream).__name__}")

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "Event") -> float:
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if not (self.recorded and end.recorded):
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return 0.0


def current_stream(device: Any = None) -> Stream:
    state = _state()
    index = state.index(device, optional=True)
    streams = getattr(state.local, "streams", {})
    return streams.get(index) or _default_stream(index)


@functools.lru_cache(maxsize=None)
def _default_stream(index: int) -> Stream:
    return Stream(index)


def default_stream(device: Any = None) -> Stream:
    return _default_stream(_state().index(device, optional=True))


@contextlib.contextmanager
def stream(chosen: Stream | None) -> Iterator[None]:
    """torch.cuda.stream: a None stream changes nothing; otherwise it is this thread's current one inside."""
    if chosen is None:
        yield
        return
    if not isinstance(chosen, Stream):
        raise TypeError(f"torch.cuda.stream expects a torch.cuda.Stream or None, got {type(chosen).__name__}")
    local = _state().local
    streams = getattr(local, "streams", {})
    local.streams = {**streams, chosen.device_index: chosen}
    try:
        yield
    finally:
        local.streams = streams


def set_device(device: Any) -> None:
    index = _get_device_index(device)  # torch's check: an index-less torch.device("cuda") is a ValueError
    if index >= 0:
        _state().local.device = _state().index(index)
        _log(f"set_device {index}")


def _log(line: str) -> None:
    """What a process did on its fake GPU, for a test to read after the process (a Ray worker) is gone."""
    folder = os.environ.get(LOG_ENV)
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.log"), "a") as log:
            log.write(line + "\n")


def synchronize(device: Any = None) -> None:
    _state().index(device, optional=True)


def set_per_process_memory_fraction(fraction: Any, device: Any = None) -> None:
    state = _state()
    index = state.index(state.current if device is None else device)
    if not isinstance(fraction, float):
        raise TypeError("Invalid type for fraction argument, must be `float`")
    if fraction < 0 or fraction > 1:
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
    state.memory_fractions[index] = fraction


def get_per_process_memory_fraction(device: Any = None) -> float:
    state = _state()
    return state.memory_fractions.get(state.index(state.current if device is None else device), 1.0)


def _device_figure(value: int = 0) -> Any:
    def figure(device: Any = None) -> int:
        _state().index(device, optional=True)
        return value

    return figure


def _device_call(device: Any = None) -> None:
    _state().index(device, optional=True)


def get_device_properties(device: Any = None) -> SimpleNamespace:
    _state().index(device, optional=True)
    return SimpleNamespace(name=NAME, total_memory=MEMORY, multi_processor_count=8, major=9, minor=0)


def mem_get_info(device: Any = None) -> tuple[int, int]:
    _state().index(device, optional=True)
    return MEMORY, MEMORY


def _rng_index(device: Any) -> int:
    if isinstance(device, int):
        device = torch.device("cuda", device)
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {device}")
    return _state().index(device, optional=True)


def get_rng_state(device: Any = "cuda") -> torch.Tensor:
    return _state().generators[_rng_index(device)].get_state()


def set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
    if not isinstance(new_state, torch.Tensor) or new_state.dtype != torch.uint8 or new_state.device.type != "cpu":
        raise RuntimeError("expected a torch.ByteTensor on the CPU as the new RNG state")
    _state().generators[_rng_index(device)].set_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [g.get_state() for g in _state().generators]


def set_rng_state_all(new_states: Any) -> None:
    for index, new_state in enumerate(new_states):
        set_rng_state(new_state, index)


def manual_seed_all(seed: int) -> None:
    for g in _state().generators:
        g.manual_seed(int(seed))


def manual_seed(seed: int) -> None:
    _state().generators[_state().current].manual_seed(int(seed))


class _Autocast(torch.amp.autocast):
    """autocast for "cuda" runs as the CPU's (same dtypes); its own checks of the arguments still apply."""

    def __init__(self, device_type: str, *args: Any, **kwargs: Any):
        super().__init__("cpu" if device_type == "cuda" else device_type, *args, **kwargs)


class _GradScaler(torch.amp.GradScaler):
    def __init__(self, device: str = "cuda", *args: Any, **kwargs: Any):
        super().__init__("cpu" if device == "cuda" else device, *args, **kwargs)


def _device_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    state = _state()
    args = tuple(state.host(a) if isinstance(a, (str, torch.device)) else a for a in args)
    if "device" in kwargs:
        kwargs = {**kwargs, "device": state.host(kwargs["device"])}
    return args, kwargs


def _on_host(method: Any) -> Any:
    """A `.to` of tensors or modules, with a CUDA device (checked) replaced by the CPU."""

    @functools.wraps(method)
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _device_args(args, kwargs)
        return method(self, *args, **kwargs)

    return to


def _factory(function: Any) -> Any:
    """A tensor factory whose CUDA device is the CPU and whose pinned memory is plain memory."""

    @functools.wraps(function)
    def make(*args: Any, **kwargs: Any) -> Any:
        _, kwargs = _device_args((), kwargs)
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return function(*args, **kwargs)

    return make


def _cuda_method(self: Any, device: Any = None, non_blocking: bool = False, **_: Any) -> Any:
    _state().index(_state().current if device is None else device, optional=True)
    return self


def _pin_memory(self: torch.Tensor, device: Any = None) -> torch.Tensor:
    return self


def _record_stream(self: torch.Tensor, chosen: Any) -> None:
    if not isinstance(chosen, Stream):
        raise TypeError(f"record_stream expects a torch.cuda.Stream, got {type(chosen).__name__}")


def _patch(owner: Any, name: str, value: Any) -> None:
    _SAVED.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def install(devices: int = 1) -> None:
    """Make this process see `devices` fake GPUs until `uninstall`."""
    global _STATE
    if _STATE is not None:
        raise RuntimeError("the CUDA stand-in is installed already")
    _STATE = StandIn(devices)
    cuda = torch.cuda
    calls = {
        "is_available": lambda: True, "device_count": lambda: devices, "current_device": lambda: _state().current,
        "set_device": set_device, "synchronize": synchronize, "Stream": Stream, "Event": Event, "stream": stream,
        "current_stream": current_stream, "default_stream": default_stream,
        "set_per_process_memory_fraction": set_per_process_memory_fraction,
        "get_per_process_memory_fraction": get_per_process_memory_fraction,
        "memory_allocated": _device_figure(), "max_memory_allocated": _device_figure(),
        "memory_reserved": _device_figure(), "max_memory_reserved": _device_figure(),
        "reset_peak_memory_stats": _device_call, "empty_cache": lambda: None, "mem_get_info": mem_get_info,
        "get_device_properties": get_device_properties, "get_device_name": lambda d=None: get_device_properties(d).name,
        "get_device_capability": lambda d=None: (9, 0), "is_bf16_supported": lambda *a, **k: True,
        "is_current_stream_capturing": lambda: False,  # asked by every optimizer step where CUDA is available
        "get_rng_state": get_rng_state, "set_rng_state": set_rng_state, "get_rng_state_all": get_rng_state_all,
        "set_rng_state_all": set_rng_state_all, "manual_seed": manual_seed, "manual_seed_all": manual_seed_all,
    }  # fmt: skip
    for name, value in calls.items():
        _patch(cuda, name, value)
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all", "get_rng_state_all",
                 "set_rng_state_all"):  # fmt: skip
        _patch(cuda.random, name, calls[name])
    _patch(torch, "autocast", _Autocast)
    _patch(torch.amp, "autocast", _Autocast)
    _patch(torch.amp, "GradScaler", _GradScaler)
    _patch(torch.Tensor, "to", _on_host(torch.Tensor.to))
    _patch(torch.Tensor, "cuda", _cuda_method)
    _patch(torch.Tensor, "pin_memory", _pin_memory)
    _patch(torch.Tensor, "record_stream", _record_stream)
    _patch(nn.Module, "to", _on_host(nn.Module.to))
    _patch(nn.Module, "cuda", _cuda_method)
    for name in _FACTORIES:
        _patch(torch, name, _factory(getattr(torch, name)))
    # What the loops switch on for a GPU, restored with the rest.
    for owner, name in ((torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
                        (torch.backends.cuda.matmul, "allow_tf32")):  # fmt: skip
        _patch(owner, name, getattr(owner, name))


def uninstall() -> None:
    global _STATE
    while _SAVED:
        owner, name, value = _SAVED.pop()
        setattr(owner, name, value)
    _default_stream.cache_clear()
    _STATE = None


@contextlib.contextmanager
def cuda_standin(devices: int = 1) -> Iterator[torch.device]:
    """`devices` fake GPUs inside the block; yields torch.device("cuda"), index-less as a user would write it."""
    install(devices)
    try:
        yield torch.device("cuda")
    finally:
        uninstall()
