"""Runs a module under cProfile in every thread: ``python -m bench.profiled OUT MODULE [ARGS]``.

cProfile alone sees only the main thread, while the connector works in paho's network
thread, its request worker and its control-interface thread. Each thread gets its own
profiler here; when the module's ``main`` returns (SIGTERM), the profiles are merged into
``OUT.pstats`` and summarised in ``OUT.txt`` (top functions, time per thread).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import runpy
import sys
import threading
from pathlib import Path
from typing import Any

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append((self.name, profile))
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def write_report(out: Path, profiles: list[tuple[str, cProfile.Profile]], title: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    per_thread: dict[str, float] = {}
    merged: pstats.Stats | None = None
    for name, profile in profiles:
        profile.disable()
        stats = pstats.Stats(profile)
        total: Any = getattr(stats, "total_tt", 0.0)
        key = name.split("-")[0] if name.startswith("Thread-") else name
        per_thread[key] = per_thread.get(key, 0.0) + float(total)
        if merged is None:
            merged = stats
        else:
            merged.add(stats)
    if merged is None:
        return
    merged.dump_stats(str(out.with_suffix(".pstats")))
    text = io.StringIO()
    text.write(f"# {title}\n\n## Profiled time per thread (s; includes blocking waits)\n\n")
    for name, seconds in sorted(per_thread.items(), key=lambda item: -item[1]):
        text.write(f"{seconds:10.3f}  {name}\n")
    for order in ("tottime", "cumulative"):
        text.write(f"\n## Top 30 by {order}\n")
        merged.stream = text  # type: ignore[attr-defined]
        merged.sort_stats(order).print_stats(30)
    out.with_suffix(".txt").write_text(text.getvalue())


def main() -> None:
    out = Path(sys.argv[1])
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()
    _profiles.append(("MainThread", main_profile))
    main_profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        main_profile.disable()
        with _lock:
            profiles = list(_profiles)
        write_report(out, profiles, f"python -m {module} under cProfile (all threads)")


if __name__ == "__main__":
    main()
