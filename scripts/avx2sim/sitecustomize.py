"""Run Python as on a CPU without native bf16 (scripts/test-as-avx2.sh puts this folder first on
PYTHONPATH): netvlad_gui reads the CPU flags from $NETVLAD_FAKE_CPUINFO instead of
/proc/cpuinfo, so precision "auto" is fp32, as on an AVX2-only machine. oneDNN is capped with
ONEDNN_MAX_CPU_ISA by the script."""

import importlib.abc
import importlib.util
import os
import sys

_MODULE = "netvlad_gui.core.model.runtime"


class _FakeCpuinfo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _MODULE or not os.environ.get("NETVLAD_FAKE_CPUINFO"):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.CPUINFO = os.environ["NETVLAD_FAKE_CPUINFO"]

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _FakeCpuinfo())
