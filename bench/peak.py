"""Each process's own peak memory: the one way every benchmark in bench/ measures it.

    .venv/bin/python bench/peak.py REPORT -m roomdrop.cli send FILE ...   # a module
    .venv/bin/python bench/peak.py REPORT bench/relay.py --child SPEC     # a script
    .venv/bin/python bench/peak.py REPORT -c CODE                         # code

Not ``ru_maxrss``: on Linux a process started with fork + exec (every ``subprocess``
child) starts with its parent's peak in it, both in the parent's ``os.wait4`` and in the
child's own ``getrusage(RUSAGE_SELF)`` (exec records the peak of the address space it
replaces, the copy of the parent's). A child whose own peak was 13.4 MiB reported
213.6 MiB there while its parent held 200 MiB; tests/test_bench.py checks this module
against that. What is a process's own is its address space's high-water mark, ``VmHWM``
in /proc/PID/status, which exec starts afresh. It is gone once the process has exited,
so it is read just before:

* a process that stays up for the whole measurement (a server): :func:`vm_hwm_kib` of
  its pid, read by the benchmark while it still runs;
* a process that ends by itself (a client, a command): started with :func:`start`, which
  runs it under this file (as above). This file runs the module or script in its own
  process (no second process, nothing imported) and, as it ends, however
  it ends (return, ``SystemExit``, an exception, Ctrl-C), writes its VmHWM in KiB to
  REPORT; :func:`reported_kib` reads it once the process has exited. A process run so
  peaks ~0.5 MiB higher than run directly (this file's own code; measured: 9.2 against
  8.7 MiB for an empty script, 36.5 against 36.0 MiB for ``roomdrop --version``).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing, pathlib and subprocess cost the measured process ~3 MiB
if TYPE_CHECKING:
    from pathlib import Path
    from subprocess import Popen
    from typing import Any

HERE = os.path.abspath(__file__)


class NoPeak(Exception):
    """No VmHWM could be read (the process had exited, or the report is missing)."""


def vm_hwm_kib(pid: int | str = "self") -> int:
    """``VmHWM`` of ``pid`` (default: this process) in KiB: its own peak resident memory."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    raise NoPeak(f"no VmHWM for pid {pid}")


def command(cmd: list[str], report: Path) -> list[str]:
    """``cmd`` (``python -m MODULE ...``, ``python SCRIPT ...`` or ``python -c CODE``)
    run under this file, so that its own peak ends up in ``report``."""
    if not cmd or cmd[0] != sys.executable:
        raise ValueError(f"not a command of this Python: {cmd}")
    return [cmd[0], HERE, str(report), *cmd[1:]]


def start(cmd: list[str], report: Path, **popen: Any) -> Popen[Any]:
    """``subprocess.Popen`` of :func:`command`; any stale report is removed first."""
    import subprocess

    report.unlink(missing_ok=True)
    return subprocess.Popen(command(cmd, report), **popen)


def reported_kib(report: Path) -> int:
    """The peak a process started with :func:`start` wrote as it ended, in KiB."""
    try:
        return int(report.read_text())
    except (OSError, ValueError):
        raise NoPeak(f"no peak in {report} (the process ended without Python's cleanup?)") from None


def run_as_main(code: str, filename: str) -> None:
    """Run ``code`` as ``__main__``, the way ``python SCRIPT`` does, with nothing imported
    (runpy.run_path would import pkgutil and importlib.util: ~2.3 MiB on the peak)."""
    main = type(sys)("__main__")
    main.__file__ = filename
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    exec(compile(code, filename, "exec"), main.__dict__)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or (argv[1] in ("-m", "-c") and len(argv) < 3):
        raise SystemExit(__doc__.split("\n\n")[1])
    report = argv[0]
    try:
        if argv[1] == "-m":  # python -m MODULE: runpy is imported by then anyway
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = os.getcwd()
            import runpy

            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        elif argv[1] == "-c":  # python -c CODE
            sys.argv = ["-c", *argv[3:]]
            sys.path[0] = ""
            run_as_main(argv[2], "<string>")
        else:  # python SCRIPT
            script = os.path.abspath(argv[1])
            sys.argv = argv[1:]
            sys.path[0] = os.path.dirname(script)
            with open(script, "rb") as source:
                code = source.read().decode()
            run_as_main(code, script)
    finally:
        with open(report, "w") as out:
            out.write(str(vm_hwm_kib()))


if __name__ == "__main__":
    main(sys.argv[1:])
