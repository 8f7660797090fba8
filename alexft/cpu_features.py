"""What the CPU can do, read without TensorFlow (so benchmarks and tools can ask cheaply)."""


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True or False from the CPU's flags on Linux; None where they cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return None
    if not flags:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags
