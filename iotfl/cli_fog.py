"""``iotfl fog``: a parent gateway of the fog tier (site gateways post to it with --parent; it posts upward)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iotfl.cli_common import ConfigOpt, opt, settings_for, setup_logging, stop_event


def fog_cmd(
    ctx: typer.Context,
    id: Annotated[str, opt("This fog gateway's id, e.g. region0 (its upstream knows it by it).", "ID")] = "",
    cloud: Annotated[str, opt("Upstream: the cloud, or another fog gateway.", "CLOUD")] = "http://127.0.0.1:8000",
    token: Annotated[
        str, opt("Bearer token the upstream knows this fog gateway by.", "TOKEN", show_default=False)
    ] = "",
    cloud_ca: Annotated[
        Path | None, opt("CA file the https:// upstream certificate must chain to (default: system CAs).", "CLOUD_CA")
    ] = None,
    host: Annotated[str, opt("Interface the children reach this gateway on.", "HOST")] = "127.0.0.1",
    port: Annotated[int, opt("HTTP port for the children.", "PORT")] = 8100,
    child_token: Annotated[
        list[str] | None,
        typer.Option(help="child=SECRET, repeatable; or IOTFL_CHILD_TOKENS='site0=a,site1=b'.", show_default=False),
    ] = None,
    round_timeout: Annotated[
        float, opt("The cloud's round timeout: a child is live while it polled within twice this.", "ROUND_TIMEOUT")
    ] = 30.0,
    forward_margin: Annotated[
        float, opt("Children see the upstream deadline this many seconds earlier.", "FORWARD_MARGIN")
    ] = 4.0,
    state_dir: Annotated[
        Path,
        opt("Where the state file lives: accepted child aggregates and the outbox of rounds to forward.", "STATE_DIR"),
    ] = Path("."),
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a fog gateway: child gateways post their aggregates here (the cloud's API); it sums them (weighted by
    their n, late ones staleness-weighted) and posts one aggregate per round upward. See docs/scale-out.md."""
    from gateway.fog_http import run_fog
    from gateway.fog_settings import FogSettings

    settings = settings_for(ctx, FogSettings, config, locals(), child_tokens=child_token or None)
    setup_logging(verbose)
    run_fog(settings, stop_event())


__all__ = ["fog_cmd"]
