"""Installs the CUDA stand-in (tests/cuda_standin.py) at interpreter start when KD_SEARCH_CUDA_STANDIN is set.

Put this folder on PYTHONPATH: every Python process started with it, a search driver and each Ray worker
it starts, then sees the same fake GPU(s), so a whole search runs its CUDA code on a CPU."""

import os

if os.environ.get("KD_SEARCH_CUDA_STANDIN"):
    from tests.cuda_standin import install

    install(int(os.environ["KD_SEARCH_CUDA_STANDIN"]))
