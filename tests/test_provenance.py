"""Provenance: which bf16 units the CPU has, read from cpuinfo flags."""

from selfdistill.provenance import cpu_bf16_units, provenance


def test_bf16_units_are_read_from_the_flags_line():
    amx = "model name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_bf16_units(cpuinfo=amx) == "amx_bf16, avx512_bf16"
    assert cpu_bf16_units(cpuinfo="flags\t\t: fpu sse2 avx2 avx512f\n") == "none"
    assert cpu_bf16_units(cpuinfo="model name\t: some ARM core\n") == "unknown"


def test_provenance_names_this_machines_units_and_command():
    """Against this machine's /proc/cpuinfo read independently: each unit is named iff its flag is there."""
    from pathlib import Path

    record = provenance(["x.py", "--a", "1"])
    assert record["command"] == "python x.py --a 1" and record["versions"]["torch"]
    info = Path("/proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in info.read_text().splitlines()
                  if line.startswith("flags")), None) if info.is_file() else None
    if flags is None:
        assert record["cpu_bf16_units"] == "unknown"
        return
    named = set(record["cpu_bf16_units"].split(", ")) - {"none"}
    assert named == {u for u in ("amx_bf16", "avx512_bf16") if u in flags}

