"""Run scripts under a real MicroPython: the unix port named by ``IOTFL_MICROPYTHON``, else the WebAssembly port.

``micropython()`` returns a runner or ``None`` (``find_runner()`` also says why). The unix runner
(``kind == "unix"``, ``sockets`` True) runs the binary with ``-X heapsize=N`` and ``MICROPYPATH``; the wasm
runner (``kind == "wasm"``) runs the npm package ``@micropython/micropython-webassembly-pyscript`` under node,
for compute-only scripts: it copies the search path's ``.py`` files and the files directly in ``cwd`` into its
in-memory file system, so files the script writes never reach the host, and it has no sockets.

Module search path of a run: ``micropypath`` (directories tried first, e.g. a test ``board.py``), then
``firmware/`` and micropython-lib's umqtt (the ``lib/`` next to the binary), then ``.frozen``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ENV = "IOTFL_MICROPYTHON"
REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SHARED_LIB = REPO.parent / "shared" / "tools" / "micropython" / "lib"
WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_INSTALL_TIMEOUT = 180.0


# Helpers the MicroPython test scripts share: hex of a buffer, and the name of the exception a call raises.
SCRIPT_HELPERS = r"""
from binascii import hexlify


def h(b):
    return hexlify(bytes(b)).decode()


def error(fn):
    try:
        fn()
    except ValueError:
        return "ValueError"
    except Exception as e:
        return type(e).__name__
    return "none"
"""


class MicroPythonError(RuntimeError):
    """A script ended with an error, or its output was not what the caller expected."""


def heap_bytes(heap: str | int) -> int:
    """``"64K"`` / ``"1M"`` / ``65536`` → bytes."""
    if isinstance(heap, int):
        return heap
    text = heap.strip().upper()
    scale = {"K": 1024, "M": 1 << 20}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iotfl" / "mpy-wasm"


@dataclass(frozen=True)
class MicroPythonRunner:
    """One MicroPython: ``kind`` ``"unix"`` (the binary ``program``) or ``"wasm"`` (``program`` = micropython.mjs)."""

    kind: str
    program: Path
    lib: Path | None = None

    @property
    def sockets(self) -> bool:
        return self.kind == "unix"

    def search_path(self, micropypath: list[str | Path] | None = None) -> list[str]:
        dirs = [str(p) for p in micropypath or []] + [str(FIRMWARE)]
        if self.lib is not None:
            dirs.append(str(self.lib))
        return dirs

    def command(
        self, script: Path, heap: str | int = "64K", micropypath: list[str | Path] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a unix-port run (for callers that need a background ``Popen``)."""
        if self.kind != "unix":
            raise MicroPythonError("only the unix port runs as a plain process")
        env = dict(os.environ, MICROPYPATH=":".join([*self.search_path(micropypath), ".frozen"]))
        return [str(self.program), "-X", f"heapsize={heap}", str(script)], env

    def start(
        self,
        script: Path,
        heap: str | int = "64K",
        micropypath: list[str | Path] | None = None,
        cwd: str | Path | None = None,
        **popen: Any,
    ) -> subprocess.Popen[str]:
        """Start a unix-port script in the background; the caller must bound its wait and kill it."""
        argv, env = self.command(Path(script).resolve(), heap, micropypath)
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(argv, env=env, cwd=cwd, text=True, **popen)

    def run(
        self,
        script: str | Path,
        heap: str | int = "64K",
        micropypath: list[str | Path] | None = None,
        timeout: float = 60,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (a ``Path`` to a file, or a ``str`` of source) and wait at most ``timeout`` seconds."""
        with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
            if isinstance(script, str):
                path = Path(tmp) / "script.py"
                path.write_text(script)
            else:
                path = Path(script).resolve()
            if self.kind == "unix":
                argv, env = self.command(path, heap, micropypath)
                return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
            return self._run_wasm(path, heap, micropypath, timeout, cwd, Path(tmp))

    def run_json(self, script: str | Path, **kwargs: Any) -> Any:
        """Run ``script`` and parse the last line it printed as JSON; a non-zero exit raises ``MicroPythonError``."""
        proc = self.run(script, **kwargs)
        if proc.returncode != 0:
            raise MicroPythonError(f"{self.kind} MicroPython exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise MicroPythonError(f"the script printed nothing; stderr:\n{proc.stderr}")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise MicroPythonError(f"last line is not JSON:\n{proc.stdout[-2000:]}") from None

    def _run_wasm(
        self,
        script: Path,
        heap: str | int,
        micropypath: list[str | Path] | None,
        timeout: float,
        cwd: str | Path | None,
        tmp: Path,
    ) -> subprocess.CompletedProcess[str]:
        files: list[list[str]] = []
        sys_path = []
        for i, folder in enumerate(self.search_path(micropypath)):
            root = Path(folder)
            sys_path.append(f"/p{i}")
            if root.is_dir():
                files += [[f"/p{i}/{f.relative_to(root)}", str(f)] for f in sorted(root.rglob("*.py"))]
        if cwd is not None:
            files += [[f"/work/{f.name}", str(f)] for f in sorted(Path(cwd).iterdir()) if f.is_file()]
        spec = {"heap": heap_bytes(heap), "files": files, "path": sys_path, "script": script.read_text()}
        spec_file = tmp / "spec.json"
        spec_file.write_text(json.dumps(spec))
        driver = tmp / "driver.mjs"
        driver.write_text(_DRIVER.replace("MJS_URL", json.dumps(self.program.as_uri())))
        return subprocess.run(
            ["node", str(driver), str(spec_file)], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )


# node side of the wasm runner: load MicroPython, fill its file system, run the script, exit 1 on an exception
_DRIVER = """
import fs from "fs";
import { loadMicroPython } from MJS_URL;
const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const mp = await loadMicroPython({
  heapsize: spec.heap, linebuffer: false,
  stdout: (d) => process.stdout.write(d), stderr: (d) => process.stderr.write(d),
});
const mkdirs = (p) => { let cur = ""; for (const part of p.split("/").slice(1, -1)) {
  cur += "/" + part; try { mp.FS.mkdir(cur); } catch (e) {} } };
mkdirs("/work/x");
for (const [virt, host] of spec.files) { mkdirs(virt); mp.FS.writeFile(virt, fs.readFileSync(host)); }
mp.FS.chdir("/work");
let code = 0;
try {
  mp.runPython("import sys\\nsys.path[:0] = " + JSON.stringify(spec.path) + "\\n");
  mp.runPython(spec.script);
} catch (e) {
  if (e.name !== "PythonError") throw e;
  if (e.type !== "SystemExit") { process.stderr.write(e.message + "\\n"); code = 1; }
}
process.stdout.write("", () => process.exit(code));
"""


def _unix_runner(binary: str) -> MicroPythonRunner:
    path = Path(binary).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MicroPythonError(f"{ENV}={binary} is not an executable file")
    lib = path.parent / "lib"
    return MicroPythonRunner("unix", path, lib if lib.is_dir() else (SHARED_LIB if SHARED_LIB.is_dir() else None))


def _wasm_runner() -> tuple[MicroPythonRunner | None, str]:
    mjs = cache_dir() / "node_modules" / WASM_PACKAGE / "micropython.mjs"
    if shutil.which("node") is None:
        return None, f"{ENV} is unset and node is not installed (needed for the WebAssembly MicroPython)"
    if not mjs.is_file():
        npm = shutil.which("npm")
        if npm is None:
            return None, f"{ENV} is unset and npm is not installed (to fetch {WASM_PACKAGE})"
        cache_dir().mkdir(parents=True, exist_ok=True)
        argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir()), WASM_PACKAGE]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=WASM_INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, f"{ENV} is unset and `npm install {WASM_PACKAGE}` took over {WASM_INSTALL_TIMEOUT:.0f} s"
        if proc.returncode != 0 or not mjs.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"{ENV} is unset and `npm install {WASM_PACKAGE}` failed: {last}"
    runner = MicroPythonRunner("wasm", mjs)
    try:
        probe = runner.run("print(1 + 1)", heap="256K", timeout=60)
    except subprocess.TimeoutExpired:
        return None, f"{ENV} is unset and the WebAssembly MicroPython did not answer within 60 s"
    if probe.stdout.strip() != "2":
        return None, f"{ENV} is unset and the WebAssembly MicroPython does not run: {probe.stderr.strip()[-200:]}"
    return runner, ""


@cache
def find_runner() -> tuple[MicroPythonRunner | None, str]:
    """The runner to use and, when there is none, a one-line reason; a wrong ``IOTFL_MICROPYTHON`` raises."""
    binary = os.environ.get(ENV)
    if binary:
        return _unix_runner(binary), ""
    return _wasm_runner()


def micropython() -> MicroPythonRunner | None:
    return find_runner()[0]


def unix_micropython() -> MicroPythonRunner | None:
    """The unix port only (sockets, a real process), or ``None``."""
    runner = micropython() if os.environ.get(ENV) else None
    return runner if runner is not None and runner.kind == "unix" else None
