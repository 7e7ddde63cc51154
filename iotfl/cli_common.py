"""What every ``iotfl`` command shares: option helpers, settings, clean errors, logging, stop signals."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iotfl.config import ConfigError, build

S = TypeVar("S", bound=BaseSettings)

err = Console(stderr=True)

# Exit codes of every command (docs/operations.md): scripts and systemd tell these apart.
EXIT_OK = 0
EXIT_FAILURE = 1  # it ran and failed: a peer unreachable, a process died, an acknowledged update lost
EXIT_USAGE = 2  # bad flags, settings or input files (click's own usage errors use 2 as well)
EXIT_MISSING_EXTRA = 3  # the command needs an optional extra that is not installed
EXIT_INTERRUPTED = 130  # Ctrl-C

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file [default: ./iotfl.toml if present]; flags and IOTFL_* env win over it.",
        envvar="IOTFL_CONFIG",
        show_envvar=True,
    ),
]


def opt(help: str, env: str, **kw: Any) -> Any:
    return typer.Option(help=help, envvar=f"IOTFL_{env}", show_envvar=True, **kw)


def given(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The flags the user set (on the command line or through IOTFL_*); the rest fall through to the config file."""
    # compared by name: typer vendors its own click, so the ParameterSource enum has no stable import path
    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":
            given[name] = value
    return given


def settings_for(ctx: typer.Context, cls: type[S], config: Path | None, values: dict[str, Any], **explicit: Any) -> S:
    """Settings for the command from its given flags, the environment and ``--config``, or exit with the reason."""
    flags = given(ctx, {k: v for k, v in values.items() if k in cls.model_fields})
    flags.update({k: v for k, v in explicit.items() if v is not None})
    try:
        return build(cls, config, section(ctx), **flags)
    except ConfigError as exc:
        fail(str(exc))


def section(ctx: typer.Context) -> str:
    """The command's table in the config file: ``gateway``, ``provision.fleet``, …"""
    return ".".join(ctx.command_path.split()[1:])


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One red line on stderr and exit ``code`` (default: a usage error; see the EXIT_* codes)."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def missing_extra(extra: str, exc: ImportError) -> NoReturn:
    fail(f"this command needs an extra: pip install 'iotfl[{extra}]' ({exc.name} is missing)", EXIT_MISSING_EXTRA)


def progress_bars() -> Progress:
    """The bars of a long command, on stderr (stdout stays free for its result)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # httpx logs every request at INFO: two lines a second from each polling gateway.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def stop_event() -> threading.Event:
    """An event set by SIGINT/SIGTERM, so services shut down cleanly instead of dying mid-write."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def load_dataset(spec: str, seed: int) -> Any:
    from iotfl.datasets import load

    try:
        return load(spec, seed)
    except ValueError as exc:
        fail(str(exc))


# Robust aggregation (docs/robustness.md), the same options on the gateway, the cloud and the demo.
AggregationOpt = Annotated[str, opt("Aggregation rule: fedavg | clip | trimmed-mean | median | krum.", "AGGREGATION")]
ClipNormOpt = Annotated[float, opt("clip: bound on each update's L2 norm (0 = the round's median norm).", "CLIP_NORM")]
TrimOpt = Annotated[float, opt("trimmed-mean: fraction of the updates trimmed at each end.", "TRIM")]
KrumFOpt = Annotated[float, opt("krum: fraction of the updates assumed hostile.", "KRUM_F")]
# Server optimizers (docs/learning.md), the same options on the cloud and the demo.
ServerOptOpt = Annotated[str, opt("Server optimizer: fedavg | fedavgm | fedadam | fedyogi.", "SERVER_OPT")]
ServerLrOpt = Annotated[
    float | None,
    opt(
        "Server learning rate η > 0 (default per optimizer: fedavg 1, fedavgm 0.5, fedadam/fedyogi 0.05).", "SERVER_LR"
    ),
]
ServerMomentumOpt = Annotated[float, opt("fedavgm: momentum β; fedadam/fedyogi: β1 (0 ≤ β < 1).", "SERVER_MOMENTUM")]
ServerBeta2Opt = Annotated[float, opt("fedadam/fedyogi: β2 of the second moment (0 ≤ β2 < 1).", "SERVER_BETA2")]
ServerEpsOpt = Annotated[float, opt("fedadam/fedyogi: τ, the adaptivity floor (> 0).", "SERVER_EPS")]
SelectOpt = Annotated[
    float | None,
    opt("Fraction of each gateway's devices asked to train a round, 0 < F ≤ 1 (default: every device).", "SELECT"),
]
# Update encodings (flcore.encodings, docs/protocol.md "Encodings").
TopkOpt = Annotated[
    float, opt("topk: fraction of the delta's values each update keeps (0 < F ≤ 1).", "TOPK", min=1e-6, max=1)
]
