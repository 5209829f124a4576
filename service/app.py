"""The FastAPI application: routes, error shape, and the parts' lifetimes.

On start-up the database is opened (tables created), the AMQP topology is
declared, and the result/heartbeat forwarder and the broker-account sweeper
threads start; on shutdown they stop in reverse. The broker being down at
start-up is not fatal: the forwarder keeps retrying and submissions answer 503
until it is back.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from fastapi import FastAPI

from service import (
    errors,
    routes_actions,
    routes_auth,
    routes_endpoints,
    routes_functions,
    routes_tasks,
    store,
)
from service.account_sweeper import AccountSweeper
from service.broker import BrokerUnavailable, Publisher
from service.broker_admin import BrokerAdmin
from service.broker_provisioning import Provisioner, load_key
from service.context import Service, Settings
from service.forwarder import Forwarder
from service.housekeeper import Housekeeper
from service.login_limits import LoginLimits
from service.request_limits import RequestLimits
from service.routing import Topology
from service.webapp.install import install as install_webapp

log = logging.getLogger(__name__)
MIN_SDK_VERSION = "2.0.0"
MIN_EP_VERSION = "2.0.0"


def _own_version() -> str:
    try:
        return dist_version("compute-agent")
    except PackageNotFoundError:
        return "0+unknown"


def version_doc() -> dict:
    """What ``Client.version_check`` reads (both spellings of the endpoint minimum)."""
    return {
        "api": _own_version(),
        "git_sha": "",
        "min_sdk_version": MIN_SDK_VERSION,
        "min_ep_version": MIN_EP_VERSION,
        "min_endpoint_version": MIN_EP_VERSION,
    }


def build_service(settings: Settings) -> Service:
    topology = Topology(settings.amqp_url, settings.amqp_prefix)
    sessions = store.open_database(settings.db_url)
    admin = BrokerAdmin.for_url(settings.amqp_url, settings.broker_api_url)
    return Service(
        settings=settings,
        sessions=sessions,
        topology=topology,
        publisher=Publisher(topology),
        provisioner=Provisioner(topology, admin, load_key(sessions)),
        logins=LoginLimits.of(
            settings.login_failures_per_client,
            settings.login_failures_per_address,
            settings.login_failure_window_s,
        ),
    )


def create_app(settings: Settings) -> FastAPI:
    svc = build_service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> t.AsyncIterator[None]:
        forwarder = Forwarder(svc.topology, svc.sessions)
        forwarder.start()
        sweeper = AccountSweeper(svc.provisioner, svc.sessions)
        sweeper.start()
        housekeeper = Housekeeper(
            svc.topology,
            svc.sessions,
            svc.publisher,
            svc.provisioner,
            svc.settings.start_timeout_s,
        )
        housekeeper.start()
        try:
            svc.publisher.ensure_topology()
        except BrokerUnavailable as e:
            log.error("%s; will retry on demand", e)
        try:
            yield
        finally:
            housekeeper.stop()
            sweeper.stop()
            forwarder.stop()
            svc.publisher.close()
            store.dispose(svc.sessions)

    app = FastAPI(
        title="compute-agent service",
        version=_own_version(),
        description="A self-hosted, Globus-Compute-compatible service.",
        lifespan=lifespan,
    )
    app.state.service = svc
    errors.install(app)
    app.add_middleware(RequestLimits)

    @app.get("/v2/version", tags=["service"])
    def version(service: str | None = None) -> dict:
        return version_doc()

    for module in (routes_auth, routes_functions, routes_endpoints, routes_tasks):
        app.include_router(module.router)
    app.include_router(routes_actions.router)
    install_webapp(app)
    return app
