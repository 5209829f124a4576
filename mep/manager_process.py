"""``python -I -m mep.manager_process NAME DIR``: the manager, as its monitor execs it.

It runs as the manager's unprivileged account, with the socket to its monitor
on descriptor 3 and the endpoint's log on descriptor 4. It reads ``config.yaml``
and the identity mapping through the monitor, registers with the service, tells
the monitor its endpoint id, and serves start commands until told to stop. A
failure before that exits with the sysexits code ``start`` has always used
(65, 69, 70, 75, 77, 78), which the monitor passes on as its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import typing as t
from pathlib import Path

from mep import registration as r
from mep.monitor_link import MonitorGone, MonitorLink, MonitorRefused
from mep.runtime import Runtime, RuntimeConfigError, known_endpoint_id
from templates.errors import ConfigError
from templates.manager_config import ManagerConfig, manager_config_from_text
from wire import lean_pika
from wire.forked_call import ChildCallFailed, call_in_child
from wire.redaction import install_redaction

MONITOR_FD, LOG_FD = 3, 4
EX_USAGE, EX_CONFIG, EX_SOFTWARE = 64, 78, 70
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("mep")


def _setup_logging(console: bool, debug: bool) -> None:
    handlers: list[logging.Handler] = [
        logging.StreamHandler(os.fdopen(LOG_FD, "a", buffering=1, closefd=True))
    ]
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=LOG_FORMAT,
        handlers=handlers,
        force=True,
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    install_redaction()


def load_config(link: MonitorLink, endpoint_dir: Path, files: dict[str, str]) -> ManagerConfig:
    """``config.yaml`` as ``start`` read it: ``files`` are the paths it found there."""
    source = endpoint_dir / "config.yaml"
    try:
        text = link.read_text("config") or ""
    except MonitorRefused as e:
        raise ConfigError(f"cannot read the manager config: {e}", source=str(source)) from None
    present = set(files.values())
    config = manager_config_from_text(
        text, endpoint_dir, str(source), exists=lambda p: str(p.absolute()) in present
    )
    return dataclasses.replace(config, source=source)


def register(
    name: str, config: ManagerConfig, runtime: Runtime, link: MonitorLink
) -> r.Registration:
    """Register with the service (POST, or PUT with the id ``endpoint.json`` keeps).

    The HTTP exchange runs in a forked child (:mod:`wire.forked_call`), so the
    manager never holds globus-sdk and its HTTP stack; the answer is checked here.
    """
    creds = r.client_credentials(os.environ)
    service_url, auth_url = r.resolve_urls(config.service_url, config.auth_url, os.environ)
    texts = {what: link.read_text(what) for what in ("config", "template", "schema")}
    known = known_endpoint_id(link)
    multi_user = runtime.multi_user

    def exchange() -> dict:
        try:
            owners = None if multi_user else sorted(r.owner_identities(auth_url, *creds))
            body = r.registration_body(
                name,
                config,
                multi_user=multi_user,
                config_text=texts["config"] or "",
                template_text=texts["template"],
                schema=_schema(texts["schema"]),
            )
            answer = r.send_registration(service_url, auth_url, *creds, body, known)
        except r.RegistrationError as e:  # crosses the pipe as a value, exit code kept
            return {"refused": [e.exit_code, str(e)]}
        return {"owners": owners, "answer": answer}

    outcome = _registering_child(exchange)
    if not multi_user:
        runtime.owner_identities = frozenset(outcome["owners"])
    registration = r.parse_registration(outcome["answer"], known)
    runtime.bind_endpoint(str(registration.endpoint_id))
    return registration


def _registering_child(exchange: t.Callable[[], dict]) -> dict:
    """``exchange()``'s answer from a forked child; its refusal or failure as RegistrationError."""
    try:
        outcome = call_in_child(exchange)
    except ChildCallFailed as e:
        raise r.RegistrationError(r.EX_SOFTWARE, f"the registration failed: {e}") from None
    if "refused" in outcome:
        code, message = outcome["refused"]
        raise r.RegistrationError(int(code), str(message))
    return outcome


def _schema(text: str | None) -> dict | None:
    from templates.files import parse_schema

    if not text:
        return None
    try:
        schema = parse_schema(text, "user_config_schema.json")
    except ConfigError:
        return None
    return schema if isinstance(schema, dict) else None


def _fail(code: int, message: str, console: bool) -> int:
    log.error("%s", message)
    if not console:  # in the foreground the log handler already printed it
        print(f"Error: {message}", file=sys.stderr)
    return code


@dataclasses.dataclass(frozen=True)
class Arguments:
    name: str
    endpoint_dir: str
    multi_user: bool = False
    console: bool = False
    debug: bool = False
    files: dict = dataclasses.field(default_factory=dict)  # name -> path, from start


SWITCHES = {"--multi-user": "multi_user", "--console": "console", "--debug": "debug"}


def parse_arguments(argv: list[str]) -> Arguments:
    """The command line the monitor builds: ``NAME DIR [--multi-user] [--console]
    [--debug] [--files JSON]``. Parsed by hand, as argparse would stay in the
    long-lived manager's memory for one parse (0.3 MiB of its PSS)."""
    positional: list[str] = []
    options: dict[str, t.Any] = {}
    rest = iter(argv)
    for arg in rest:
        if arg in SWITCHES:
            options[SWITCHES[arg]] = True
        elif arg == "--files":
            options["files"] = _files_option(next(rest, None))
        elif arg.startswith("--"):
            raise ValueError(f"unknown option {arg}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ValueError(f"expected NAME and ENDPOINT_DIR, got {len(positional)} arguments")
    return Arguments(*positional, **options)


def _files_option(value: str | None) -> dict:
    try:
        files = json.loads(value) if value is not None else None
    except ValueError:
        files = None
    if not isinstance(files, dict):
        raise ValueError("--files needs a JSON object of name -> path")
    return files


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"usage: mep.manager_process NAME ENDPOINT_DIR [options]: {e}", file=sys.stderr)
        return EX_USAGE
    _setup_logging(args.console, args.debug)
    link = MonitorLink.from_fd(MONITOR_FD)
    endpoint_dir = Path(args.endpoint_dir)
    try:
        config = load_config(link, endpoint_dir, args.files)
        if config.debug:
            logging.getLogger().setLevel(logging.DEBUG)
        runtime = Runtime.load(args.name, endpoint_dir, config, link, args.multi_user)
        registration = register(args.name, config, runtime, link)
        link.registered(str(registration.endpoint_id), config.heartbeat_period)
    except ConfigError as e:
        return _fail(EX_CONFIG, str(e), args.console)
    except (RuntimeConfigError, r.RegistrationError) as e:
        return _fail(e.exit_code, str(e), args.console)
    except MonitorGone as e:
        return _fail(EX_SOFTWARE, f"the monitor is gone: {e}", args.console)
    log.info(
        "manager %s runs as %s (pid %d)",
        registration.endpoint_id,
        os.environ.get("USER", "?"),
        os.getpid(),
    )
    lean_pika.install()  # before mep.manager brings in pika
    from mep.manager import Manager

    try:
        return Manager(runtime, registration, link).run()
    except Exception:
        log.exception("the manager failed")
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
