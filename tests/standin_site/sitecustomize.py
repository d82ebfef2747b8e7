"""Installs the CUDA stand-in (tests/cuda_standin.py) when KD_SEARCH_CUDA_STANDIN is set, as torch is imported.

Put this folder on PYTHONPATH: every Python process started with it, a search driver and each Ray worker
it starts, then sees the same fake GPU(s), so a whole search runs its CUDA code on a CPU. The stand-in is
installed right after torch's own import, not at interpreter start: most of Ray's Python processes never
import torch, and importing it in each of them cost the stand-in search a fifth of its CPU time (48 s to 38 s)."""

import os
import sys

if os.environ.get("KD_SEARCH_CUDA_STANDIN"):
    import importlib.abc
    import importlib.machinery

    class _AfterTorch(importlib.abc.MetaPathFinder):
        """Finds torch as Python would, and installs the stand-in once torch's module has run."""

        def find_spec(self, name, path, target=None):
            if name != "torch":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def run_then_install(module):
                run(module)
                from tests.cuda_standin import install

                install(int(os.environ["KD_SEARCH_CUDA_STANDIN"]))

            spec.loader.exec_module = run_then_install
            return spec

    sys.meta_path.insert(0, _AfterTorch())
