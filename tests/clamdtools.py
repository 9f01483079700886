"""A real clamd (Debian's ``clamav-daemon``) for the tests of the receiver's malware scan.

It runs with a signature database the test writes itself (freshclam cannot download
here, and none is needed), under the test's directory:

* ``roomdrop-test.hdb``: an MD5 signature (``MD5:SIZE:NAME``) of the EICAR test file,
  which is built at run time from two halves (:data:`EICAR`), so that this repository
  never holds the EICAR string itself (a scanner would flag the file that did);
* ``roomdrop-test.ndb``: a byte-pattern signature (``NAME:0:*:HEX``) of
  :data:`PATTERN`, found wherever it lies in a file (across INSTREAM chunks too).

clamd reports them as ``Roomdrop-Test.EICAR.UNOFFICIAL`` and
``Roomdrop-Test.Pattern.UNOFFICIAL`` (its suffix for a database of one's own). It
listens on a unix socket in the directory and on a free TCP port of 127.0.0.1, inside
the test namespace; it is ready in about a second and holds some 16 MB. ``.ci/run``
and ``scripts/test`` install it; a machine without it fails these tests with a message
saying so, it does not skip them.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STARTUP_TIMEOUT: Final = 60.0

EICAR: Final = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
"""The EICAR anti-virus test file (68 bytes), joined from two halves at run time."""
EICAR_SIGNATURE: Final = "Roomdrop-Test.EICAR.UNOFFICIAL"
PATTERN: Final = b"\x00roomdrop-test-pattern\xffthis is no real malware\x00"
"""Bytes the byte-pattern signature finds anywhere in a file."""
PATTERN_SIGNATURE: Final = "Roomdrop-Test.Pattern.UNOFFICIAL"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Clamd:
    """A clamd of the test's own (:func:`start_clamd`): :meth:`stop` it, and
    :meth:`start` it again with the same configuration (same socket, same port)."""

    base: Path
    port: int
    stream_max: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.base / "clamd.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "clamd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_config(self) -> Path:
        db, tmp = self.base / "db", self.base / "tmp"
        db.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(exist_ok=True)
        eicar_md5 = hashlib.md5(EICAR).hexdigest()
        (db / "roomdrop-test.hdb").write_text(f"{eicar_md5}:{len(EICAR)}:Roomdrop-Test.EICAR\n")
        (db / "roomdrop-test.ndb").write_text(f"Roomdrop-Test.Pattern:0:*:{PATTERN.hex()}\n")
        conf = self.base / "clamd.conf"
        conf.write_text(
            "\n".join(
                [
                    f"LocalSocket {self.socket_path}",
                    "LocalSocketMode 600",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"DatabaseDirectory {db}",
                    f"TemporaryDirectory {tmp}",
                    f"LogFile {self.log_path}",
                    "LogTime yes",
                    "Foreground yes",
                    f"StreamMaxLength {self.stream_max}",
                    "MaxFileSize 400M",
                    "MaxScanSize 400M",
                    "SelfCheck 0",
                    "",
                ]
            )
        )
        return conf

    def start(self) -> None:
        binary = shutil.which("clamd") or (
            "/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None
        )
        assert binary, "clamd is missing: .ci/run and scripts/test install it (apt clamav-daemon)"
        conf = self.write_config()
        self.socket_path.unlink(missing_ok=True)
        with (self.base / "clamd.err").open("ab") as err:
            self.process = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = (self.base / "clamd.err").read_text(errors="replace")
                raise AssertionError(f"clamd did not start:\n{err}\n{self.log()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """clamd answers PING on both its socket and its port."""
        for family, address in (
            (socket.AF_UNIX, str(self.socket_path)),
            (socket.AF_INET, ("127.0.0.1", self.port)),
        ):
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(address)
                    s.sendall(b"zPING\0")
                    if s.recv(16) != b"PONG\0":
                        return False
            except OSError:
                return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket_path.unlink(missing_ok=True)


def start_clamd(base: Path, *, stream_max: str = "400M", start: bool = True) -> Clamd:
    """A clamd in ``base`` (its database, configuration, socket and log), started unless
    ``start`` is false (then its URLs name nothing yet: a scanner that is down)."""
    base.mkdir(parents=True, exist_ok=True)
    clamd = Clamd(base, free_port(), stream_max)
    if start:
        clamd.start()
    return clamd
