"""Issue 14: precision "auto" is bf16 only where the hardware has native bf16."""

from __future__ import annotations

import json

import pytest

from netvlad_gui.core.config import ConfigError, ExtractConfig
from netvlad_gui.core.model import runtime

AVX2_ONLY = (
    "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t: avx2\n"
)
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
COOPER = "processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"  # emulated bf16 only


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def use(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(runtime, "CPUINFO", str(path))
        runtime.native_bf16.cache_clear()

    yield use
    runtime.native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("text", "want"),
    [(AVX2_ONLY, "fp32"), (SAPPHIRE, "bf16"), (COOPER, "bf16"), (SKYLAKE, "fp32"), ("", "fp32")],
    ids=["avx2", "amx", "avx512_bf16", "avx512-without-bf16", "no-cpuinfo"],
)
def test_auto_is_bf16_only_with_native_bf16(cpuinfo, text, want):
    cpuinfo(text)
    assert runtime.backbone_precision(ExtractConfig(), "cpu") == want
    # forcing either way ignores the hardware; the older bf16 switch still forces bf16
    assert runtime.backbone_precision(ExtractConfig(precision="fp32"), "cpu") == "fp32"
    assert runtime.backbone_precision(ExtractConfig(precision="bf16"), "cpu") == "bf16"
    assert runtime.backbone_precision(ExtractConfig(bf16=True), "cpu") == "bf16"


def test_this_machine_resolves_as_its_flags_say():
    runtime.native_bf16.cache_clear()
    native = bool(runtime.cpu_flags() & runtime.NATIVE_BF16_FLAGS)
    assert ExtractConfig().precision == "auto"
    assert runtime.backbone_precision(ExtractConfig(), "cpu") == ("bf16" if native else "fp32")


def test_a_bad_precision_is_refused():
    with pytest.raises(ConfigError, match="precision must be auto, fp32 or bf16"):
        ExtractConfig(precision="fp16").validate()
    assert ExtractConfig.from_options(precision="bf16").precision == "bf16"


def test_info_says_which_precision_is_used(cpuinfo, capsys):
    from netvlad_gui.cli import main

    cpuinfo(SAPPHIRE)
    assert main(["info", "--json", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "bf16" and info["precision_asked"] == "auto"
    assert info["cpu_bf16_flags"] == ["amx_bf16", "avx512_bf16"]
    cpuinfo(AVX2_ONLY)
    assert main(["info", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    assert main(["info", "--json", "--device", "cpu", "--precision", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bf16"
