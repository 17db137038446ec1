"""How much memory a process holds (Linux's /proc): what the collector paces its inserts by,
and what the tests and benchmarks measure."""
from __future__ import annotations


def memory_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in MB (Linux's /proc;
    None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None
