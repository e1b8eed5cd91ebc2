"""Provenance: which bf16 units the CPU has, read from cpuinfo flags."""

from selfdistill.provenance import cpu_bf16_units, provenance


def test_bf16_units_are_read_from_the_flags_line():
    amx = "model name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_bf16_units(cpuinfo=amx) == "amx_bf16, avx512_bf16"
    assert cpu_bf16_units(cpuinfo="flags\t\t: fpu sse2 avx2 avx512f\n") == "none"
    assert cpu_bf16_units(cpuinfo="model name\t: some ARM core\n") == "unknown"


def test_provenance_names_them():
    assert provenance(["x.py"])["cpu_bf16_units"] in {"none", "unknown", "amx_bf16", "avx512_bf16",
                                                      "amx_bf16, avx512_bf16"}

