"""The architecture, checked: the protocol core does no I/O, and each I/O library is
imported by the one adapter module that owns it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "roomdrop"

IO_MODULES = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "subprocess",
    "threading",
    "time",
    "aiortc",
    "aioice",
    "websockets",
    "fastapi",
    "starlette",
    "uvicorn",
    "redis",
    "aiobotocore",
    "botocore",
    "termios",
}
OWNERS = {  # library -> the only modules that may import it
    "os": {
        "storage.py",
        "source.py",
        "server/auth.py",
        "server/staging.py",
        "client/terminal.py",
        "client/output.py",
        "client/configdir.py",
        "server/store/files.py",  # the store's directory adapter: fsync, rename, fchmod
        "server/store/s3.py",  # AWS_REGION, which botocore does not read
    },
    "shutil": {"storage.py", "server/staging.py"},
    "filetype": {"storage.py", "source.py"},  # the file-system adapter, its sender's scan
    "fastapi": {"server/app.py", "server/routes.py", "server/page.py"},
    "fastapi_offline": {"server/app.py"},
    "starlette": {"server/app.py", "server/routes.py", "server/page.py"},
    "uvicorn": {"server/run.py"},
    "jwt": {"server/auth.py", "client/settings.py"},
    "cryptography": {"server/staging.py", "e2e.py"},
    "pyhpke": {"e2e.py", "handshake.py"},  # device keys and content keys; the direct path
    "redis": {"server/redisbackend/"},  # the package: a folder name ends with /
    # the store on S3 (store/__init__.py imports it lazily, when ROOMDROP_STORE_URL is set)
    "aiobotocore": {"server/store/s3.py"},
    "botocore": {"server/store/s3.py"},
    "aiortc": {"client/rtc/"},
    "aioice": {"client/rtc/"},
    "websockets": {"client/signalling.py"},
    "httpx": {"client/http.py"},
    "rich": {"client/display.py"},
    "termios": {"client/terminal.py"},
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_protocol_core_imports_nothing_that_does_io() -> None:
    modules = sorted((SRC / "protocol").glob("*.py"))
    assert len(modules) >= 6
    for module in modules:
        assert not imports_of(module) & IO_MODULES, module.name


def test_each_io_library_is_imported_only_by_its_adapter() -> None:
    for module in sorted(SRC.rglob("*.py")):
        rel = module.relative_to(SRC).as_posix()
        for library, owners in OWNERS.items():
            if library in imports_of(module):
                allowed = rel in owners or any(
                    owner.endswith("/") and rel.startswith(owner) for owner in owners
                )
                assert allowed, f"{rel} imports {library}; only {owners} may"
