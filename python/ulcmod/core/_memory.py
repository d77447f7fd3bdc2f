"""How much memory a run may hold: the machine's RAM, or less under a resource limit or a cgroup."""

from __future__ import annotations

import os
import re

# The default memory budget is this share of what the process may hold; the rest is for the
# interpreter and libraries, the blocks streamed from disk and the page cache behind the
# memory-mapped matrices.
DEFAULT_BUDGET_FRACTION = 0.5

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_BYTES = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_bytes(text) -> int:
    """A size in bytes from an int or a string such as ``"512M"``, ``"8GB"``, ``"1.5GiB"``, ``"4096"``.

    >>> parse_bytes("1.5G"), parse_bytes("512MB"), parse_bytes(4096)
    (1610612736, 536870912, 4096)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _BYTES.match(str(text))
        if match is None:
            raise ValueError(f"expected a size such as 512M, 8G or 1.5GB, got {text!r}")
        value = int(float(match.group("number")) * _UNITS[match.group("unit").lower()])
    if value <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return value


def _status_bytes(field: str):
    """A ``kB`` field of /proc/self/status in bytes (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit():
    """The memory limit of this process's cgroup (v2 or v1), None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "unlimited"
            return int(text)
    return None


def available_memory() -> int:
    """Bytes this process may still take: the least of the machine's RAM, what is left under its
    address-space and data limits (``RLIMIT_AS``, ``RLIMIT_DATA``), and its cgroup's limit."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # not on Unix
        resource = None
    if resource is not None:
        for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY:
                limits.append(max(0, soft - (_status_bytes(used) or 0)))
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append(cgroup)
    return min(limits) if limits else 8 << 30  # nothing known: assume a small machine


def default_memory_budget() -> int:
    """:data:`DEFAULT_BUDGET_FRACTION` of :func:`available_memory`."""
    return int(DEFAULT_BUDGET_FRACTION * available_memory())
