"""``vividly dispatch``: start a job execution when work waits, sized to the backlog.

``vividly dispatch [--dry-run]`` makes one decision (the safety-net schedule, or a person);
``vividly dispatch serve`` is the endpoint of the wake-up push subscription. The rule and its
inputs: ``vividly_tasks.dispatch``; deployment: docs/cloud-run.md.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from vividly_tasks.cli.errors import CliError, read_settings
from vividly_tasks.cli.exit_codes import RET_CONFIG, RET_FAILED, RET_UNAVAILABLE
from vividly_tasks.dispatch.errors import DispatchConfigError, DispatchError, DispatchUnavailable
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.settings import secret_values
from vividly_tasks.worker.logs import configure_process_logging


@contextmanager
def dispatch_errors() -> Iterator[None]:
    """Refusals exit ``RET_CONFIG``, outages ``RET_UNAVAILABLE``, each with the reason."""
    try:
        yield
    except DispatchConfigError as exc:
        raise CliError(str(exc), RET_CONFIG) from exc
    except DispatchUnavailable as exc:
        raise CliError(str(exc), RET_UNAVAILABLE) from exc
    except DispatchError as exc:
        raise CliError(str(exc), RET_FAILED) from exc


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True,
              help="Print the decision and every input it used; start nothing.")
@click.pass_context
def dispatch(ctx: click.Context, dry_run: bool) -> None:
    """Decide once whether to start an execution of the job, and with how many tasks.

    Prints the decision as one JSON line (also logged); exits 78 when the deployment is wrong
    (a missing role, an unknown job), 69 when an API stays unavailable.
    """
    if ctx.invoked_subcommand is not None:
        return
    from vividly_tasks.dispatch.dispatcher import build_dispatcher  # noqa: PLC0415

    settings = dispatch_settings()
    with dispatch_errors():
        record = build_dispatcher(settings).decide_once(dry_run=dry_run, trigger="command")
    click.echo(json.dumps(record))


@dispatch.command()
@click.option("--host", default=None,
              help="Interface [default: DISPATCH_HOST, loopback; 0.0.0.0 on Cloud Run].")
@click.option("--port", type=int, default=None, help="Port [default: PORT].")
@click.option("--check-every", type=float, default=None,
              help="Also decide every this many seconds (a local safety net).")
def serve(host: str | None, port: int | None,
          check_every: float | None) -> None:
    """Serve the wake-up push subscription's endpoint (POST /push), POST /check and
    GET /healthz until SIGTERM or SIGINT.

    Exits 78 when the callers cannot be checked as DISPATCH_PUSH_AUTH says (a missing
    audience or service account, or no checks on a non-loopback interface).
    """
    from vividly_tasks.dispatch.dispatcher import build_dispatcher  # noqa: PLC0415
    from vividly_tasks.dispatch.push_auth import push_verifier  # noqa: PLC0415
    from vividly_tasks.dispatch.server import DispatchServer, dispatch_limits  # noqa: PLC0415

    settings = dispatch_settings()
    host = host or settings.dispatch_host
    with dispatch_errors():
        verifier = push_verifier(settings, host=host)
        dispatcher = build_dispatcher(settings)
    server = DispatchServer(
        dispatcher, host=host, port=port or settings.port,
        gather_seconds=settings.dispatch_gather_seconds, verifier=verifier,
        limits=dispatch_limits(settings),
        wake_up_subscription=settings.effective_wake_up_subscriptions,
        check_every_seconds=check_every,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()  # sets a flag: the loop ends within its poll timeout

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"dispatch: serving on {host}:{server.port} "
               f"(push auth: {settings.dispatch_push_auth})", err=True)
    server.serve_forever()


def dispatch_settings() -> DispatchSettings:
    """The dispatcher's settings (exit 78 if invalid), and this process's logging."""
    settings = read_settings(DispatchSettings)
    configure_process_logging(settings.log_format, settings.log_level, secret_values(settings))
    return settings
