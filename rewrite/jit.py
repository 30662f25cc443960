"""The JIT engine and the disk cache of object code.

One MCJIT engine per process; object code is linked into it once per symbol (symbols are
named by content). Object code is cached on disk under ``$TENSORIZE_CACHE_DIR``, else
``$XDG_CACHE_HOME/tensorize``, else ``~/.cache/tensorize``, named by a hash of what it was
built from (``key``): the program, the compiler's own source (lowering, codegen and every
module they import: ``CODE_MODULES``) and the target (CPU name, features, llvmlite
version). Each entry is authenticated with a keyed MAC (HMAC-SHA256) under a per-user
secret, ``$XDG_CONFIG_HOME/tensorize/cache.key`` (else ``~/.config/...``), made on first use
with mode 0600: LLVM links an object file it is given without question, so only entries
this user's compiler wrote are ever loaded; anything else is compiled again. Without a
usable key the disk cache is not used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import llvmlite.binding as llvm

from . import affine, analysis, budgets, caches, calls, codegen, descriptor, emitter, ir, polytope, printer
from . import lower as lowering

# ---------------------------------------------------------------------------
# the JIT: one engine per process, object code added to it


class _Jit:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        tm = codegen.target_machine()
        codegen.vector_library()  # what compiled code may call, loaded before any is linked
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.loaded: dict[str, int] = {}

    def load(self, obj: bytes, symbols: list[str]) -> list[int]:
        """Link ``obj`` into the process and return the addresses of ``symbols``; code already
        linked (symbols are named by content) is not linked twice."""
        with self.lock:
            if not all(s in self.loaded for s in symbols):
                self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
                self.engine.finalize_object()
                self.loaded.update((s, self.engine.get_function_address(s)) for s in symbols)
            addresses = [self.loaded[s] for s in symbols]
        if not all(addresses):
            raise RuntimeError(f"compiled code lacks a symbol among {symbols}")
        return addresses


_jit: Optional[_Jit] = None
_jit_lock = threading.Lock()
# One compile at a time: LLVM's target machine and the engine are shared by every compile
# (kernels, the pool's code, standalone intrinsics).
compile_lock = threading.RLock()


def engine() -> _Jit:
    global _jit
    with _jit_lock:
        if _jit is None:
            _jit = _Jit()
        return _jit


# ---------------------------------------------------------------------------
# caches


def cache_dir() -> Path:
    explicit = os.environ.get("TENSORIZE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorize"


# Every module lowering and codegen import, directly or not (tests/test_shared_bodies.py
# checks the list against their imports): compiled code may change when any of them does.
CODE_MODULES = (affine, analysis, budgets, caches, calls, codegen, descriptor, emitter, ir, lowering,
                polytope, printer)


def _code_version() -> str:
    """Compiled code changes when the code generator does: its source is part of the key."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        for module in CODE_MODULES:
            h.update(Path(module.__file__).read_bytes())
        _CODE_VERSION = h.hexdigest()
    return _CODE_VERSION


_CODE_VERSION: Optional[str] = None


def key(what: str) -> str:
    h = hashlib.sha256()
    for part in (_code_version(), codegen.target_id(), what):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def cached_object(key: str, build: Callable[[], tuple[bytes, dict]]) -> tuple[bytes, dict, str]:
    """Object code and its metadata for ``key``: from disk, or built by ``build()`` and saved.
    Also says where they came from (``"disk"`` or ``"compiled"``)."""
    path = cache_dir() / f"{key[:40]}.o"
    secret = _secret()
    if secret is not None:
        try:
            data = path.read_bytes()
            # LLVM links whatever object file it is given (a damaged one can crash the
            # process): only an entry whose MAC this user's key made reaches it
            if hmac.compare_digest(hmac.new(secret, data[32:], "sha256").digest(), data[:32]):
                header, _, obj = data[32:].partition(b"\n")
                return obj, json.loads(header), "disk"
        except (OSError, ValueError):
            pass
    obj, meta = build()
    if secret is not None:
        payload = json.dumps(meta).encode() + b"\n" + obj
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _sweep(path.parent)
            _write_atomic(path, hmac.new(secret, payload, "sha256").digest() + payload)
        except OSError:
            pass  # a read-only cache only costs recompiling
    return obj, meta, "compiled"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write then rename: a concurrent reader never sees half a file. The temporary file
    goes whatever happens (an error, an interrupt); only a killed process leaves one, for
    ``_sweep``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_STALE_SECONDS = 3600  # a temporary file this old belongs to no running write
_swept: set[Path] = set()


def _sweep(folder: Path) -> None:
    """Remove temporary files that killed processes left in ``folder`` (once a process)."""
    if folder in _swept:
        return
    _swept.add(folder)
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        try:
            st = tmp.lstat()
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > _STALE_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def secret_file() -> Path:
    """Where the key that authenticates disk cache entries lives: outside the cache, which
    other tools (and users) may be given to write."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tensorize" / "cache.key"


_SECRET_BYTES = 32
_secrets: dict[Path, Optional[bytes]] = {}


def _secret() -> Optional[bytes]:
    """This user's cache key, made on first use; None when it cannot be read or made, or
    is not private to this user (then the disk cache is not used)."""
    path = secret_file()
    if path not in _secrets:
        _secrets[path] = _load_secret(path)
    return _secrets[path]


def _load_secret(path: Path) -> Optional[bytes]:
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_SECRET_BYTES))
            try:
                os.link(tmp, path)  # appears whole, and never replaces another process's key
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return _read_secret(path)
    except OSError:
        return None


def _read_secret(path: Path) -> Optional[bytes]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        mine = not hasattr(os, "geteuid") or st.st_uid == os.geteuid()
        if not stat.S_ISREG(st.st_mode) or not mine or st.st_mode & 0o077:
            return None
        data = os.read(fd, _SECRET_BYTES + 1)
    finally:
        os.close(fd)
    return data if len(data) == _SECRET_BYTES else None




def load(obj: bytes, symbols: list[str]) -> list[int]:
    """Link object code ``obj`` into this process (once) and return the addresses of
    ``symbols``."""
    return engine().load(obj, symbols)
