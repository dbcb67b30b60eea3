"""``/metrics`` (Prometheus) and ``/readyz`` of the web server.

Two kinds of metrics:

- counted by this web process as it answers: requests by *route template* (never the
  raw path, so the label set stays bounded: ``/api/v1/projects/{project}``), method and
  status, with a latency histogram; responses 401 (authentication failures);
- read from the catalog at scrape time with aggregate SQL and cached ``[metrics]
  cache_seconds`` (so a scraper every few seconds, or several, costs one round of queries
  per period): datasets and bytes per project (from head versions: one row per dataset),
  sealed and unsealed datasets, files ingested, the tree's files by their last verify
  state, age of the last verify (scrub), of the last backup and of the last good backup
  drill, queued jobs and the oldest one's age by kind, datasets below their copy
  policy, objects and bytes per store, auth failures being throttled.

Who may scrape: a client with ``Authorization: Bearer <[metrics] token or
LABKEEP_METRICS_TOKEN>``, or from an address in ``[metrics] allow``. Anyone else gets
401 (no credentials) or 403 (wrong ones) and an empty body: no project name leaks.
prometheus-client is imported only here (the ``metrics`` extra).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from labkeep.keep import Keep

TOKEN_ENV = "LABKEEP_METRICS_TOKEN"  # noqa: S105 (the variable's name, not a secret)
#: latency buckets (seconds): the landing-page target is 0.1 s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    """Pure ASGI middleware: counts each answer under its route template."""

    def __init__(self, app: ASGIApp, requests: Any, latency: Any, auth_failures: Any) -> None:
        self.app = app
        self.requests, self.latency, self.auth_failures = requests, latency, auth_failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "") or "unmatched")
            method = str(scope.get("method", ""))
            self.requests.labels(template, method, str(status[0])).inc()
            self.latency.labels(template, method).observe(time.perf_counter() - start)
            if status[0] == 401:
                self.auth_failures.inc()


class CatalogCollector:
    """Gauges from the catalog, computed at most once per *ttl* seconds."""

    def __init__(self, keep: Keep, ttl: float) -> None:
        self.keep, self.ttl = keep, ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._families: list[Any] = []

    def collect(self) -> Iterator[Any]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl or not self._families:
                self._families = list(self._read())
                self._at = time.monotonic()
            families = self._families
        yield from families

    def _read(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from sqlalchemy import func, select

        from labkeep.catalog import (
            AuthFailure,
            Dataset,
            Entry,
            Event,
            Job,
            Project,
            Replica,
            Store,
            TreeCheck,
            Version,
        )
        from labkeep.clock import utcnow
        from labkeep.ops.backup import last_drill
        from labkeep.ops.whereis import below_policy

        now = utcnow()
        with self.keep.catalog.read() as session:
            datasets = GaugeMetricFamily(
                "labkeep_project_datasets", "Datasets per project", labels=["project"]
            )
            size = GaugeMetricFamily(
                "labkeep_project_bytes",
                "Bytes of the head versions per project",
                labels=["project"],
            )
            files = GaugeMetricFamily(
                "labkeep_project_files",
                "Files of the head versions per project",
                labels=["project"],
            )
            head = (Version.dataset_id == Dataset.id) & (Version.number == Dataset.head_version)
            for project, n, nbytes, nfiles in session.execute(
                select(
                    Project.name,
                    func.count(Dataset.id),
                    func.coalesce(func.sum(Version.n_bytes), 0),
                    func.coalesce(func.sum(Version.n_files), 0),
                )
                .select_from(Project)
                .outerjoin(Dataset, Dataset.project_id == Project.id)
                .outerjoin(Version, head)
                .group_by(Project.name)
            ):
                datasets.add_metric([project], n)
                size.add_metric([project], int(nbytes))
                files.add_metric([project], int(nfiles))
            yield from (datasets, size, files)

            sealed = GaugeMetricFamily(
                "labkeep_datasets", "Datasets by seal state", labels=["sealed"]
            )
            n_sealed, n_all = session.execute(
                select(func.count(Dataset.id).filter(Dataset.sealed), func.count(Dataset.id))
            ).one()
            sealed.add_metric(["true"], n_sealed)
            sealed.add_metric(["false"], n_all - n_sealed)
            yield sealed

            ingested = CounterMetricFamily(
                "labkeep_ingested_files", "Files registered by ingests (all time)"
            )
            ingested_bytes = CounterMetricFamily(
                "labkeep_ingested_bytes", "Bytes registered by ingests (all time)"
            )
            n, nbytes = session.execute(
                select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0))
                .join(
                    Version,
                    (Version.dataset_id == Entry.dataset_id) & (Version.number == Entry.valid_from),
                )
                .where(Version.kind == "ingest")
            ).one()
            ingested.add_metric([], n)
            ingested_bytes.add_metric([], int(nbytes))
            yield from (ingested, ingested_bytes)

            verified = GaugeMetricFamily(
                "labkeep_tree_files",
                "Current files in the tree by their last verify outcome",
                labels=["state"],
            )
            for state, n in session.execute(
                select(TreeCheck.status, func.count(Entry.id))
                .select_from(Entry)
                .outerjoin(TreeCheck, TreeCheck.entry_id == Entry.id)
                .where(Entry.valid_to.is_(None))
                .group_by(TreeCheck.status)
            ):
                verified.add_metric([state or "never"], n)
            yield verified

            ages = GaugeMetricFamily(
                "labkeep_last_age_seconds",
                "Seconds since the last verify (scrub), backup and good backup drill "
                "(absent: never)",
                labels=["what"],
            )
            for what, action in (("verify", "verify"), ("backup", "backup")):
                at = session.execute(
                    select(func.max(Event.at)).where(Event.action == action)
                ).scalar_one()
                if at is not None:
                    ages.add_metric([what], (now - at).total_seconds())
            drilled = last_drill(session)
            if drilled is not None:
                ages.add_metric(["drill"], (now - drilled).total_seconds())
            yield ages

            depth = GaugeMetricFamily("labkeep_jobs_queued", "Queued jobs by kind", labels=["kind"])
            oldest = GaugeMetricFamily(
                "labkeep_jobs_oldest_queued_seconds",
                "Age of the oldest queued job by kind",
                labels=["kind"],
            )
            running = GaugeMetricFamily(
                "labkeep_jobs_running", "Running jobs by kind", labels=["kind"]
            )
            for kind, state, n, first in session.execute(
                select(Job.kind, Job.state, func.count(Job.id), func.min(Job.created_at))
                .where(Job.state.in_(("queued", "running")))
                .group_by(Job.kind, Job.state)
            ):
                if state == "queued":
                    depth.add_metric([kind], n)
                    oldest.add_metric([kind], max(0.0, (now - first).total_seconds()))
                else:
                    running.add_metric([kind], n)
            yield from (depth, oldest, running)

            _short, n_short = below_policy(session, 0)
            below = GaugeMetricFamily(
                "labkeep_datasets_below_policy", "Datasets with fewer good copies than asked"
            )
            below.add_metric([], n_short)
            yield below

            objects = GaugeMetricFamily(
                "labkeep_store_objects", "Replicas recorded per store", labels=["store"]
            )
            held = GaugeMetricFamily(
                "labkeep_store_bytes", "Bytes recorded per store", labels=["store"]
            )
            for name, n, nbytes in session.execute(
                select(Store.name, func.count(Replica.id), func.coalesce(func.sum(Replica.size), 0))
                .select_from(Store)
                .outerjoin(Replica, Replica.store_id == Store.id)
                .where(Store.kind != "tree")
                .group_by(Store.name)
            ):
                objects.add_metric([name], n)
                held.add_metric([name], int(nbytes))
            yield from (objects, held)

            throttled = GaugeMetricFamily(
                "labkeep_auth_failures_tracked",
                "Failed sign-ins currently counted for throttling (all accounts and clients)",
            )
            throttled.add_metric(
                [],
                session.execute(
                    select(func.coalesce(func.sum(AuthFailure.failures), 0))
                ).scalar_one(),
            )
            yield throttled


def _allowed(request: Request, token: str, allow: tuple[str, ...]) -> int:
    """200 when the scraper may read, else 401 (no credentials) or 403."""
    given = request.headers.get("authorization", "")
    if given:
        scheme, _, value = given.partition(" ")
        if token and scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
            return 200
        return 403
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return 401
    if any(address in ipaddress.ip_network(net, strict=False) for net in allow):
        return 200
    return 401


def install(app: FastAPI, keep: Keep) -> None:
    """Add ``/readyz``, and the request middleware and ``/metrics`` to *app*."""

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        """200 when the catalog answers at the expected schema and every store can be
        reached; 503 with the reasons otherwise."""
        return _readiness(keep)

    try:
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            Counter,
            Histogram,
            generate_latest,
        )
    except ImportError:

        @app.get("/metrics", include_in_schema=False)
        def no_metrics() -> Response:
            return Response(
                b"prometheus-client is not installed: pip install 'labkeep[metrics]'\n",
                status_code=501,
                media_type="text/plain",
            )

        return

    config = keep.config.metrics
    token = os.environ.get(TOKEN_ENV) or config.token
    registry = CollectorRegistry()
    requests = Counter(
        "labkeep_http_requests", "HTTP requests answered", ["route", "method", "status"],
        registry=registry,
    )  # fmt: skip
    latency = Histogram(
        "labkeep_http_request_duration_seconds", "Time to answer HTTP requests",
        ["route", "method"], buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    auth_failures = Counter(
        "labkeep_http_auth_failures", "HTTP answers 401 (authentication failed or missing)",
        registry=registry,
    )  # fmt: skip
    registry.register(CatalogCollector(keep, config.cache_seconds))
    app.add_middleware(
        RequestMetrics, requests=requests, latency=latency, auth_failures=auth_failures
    )

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        verdict = _allowed(request, token, config.allow)
        if verdict != 200:
            headers = {"WWW-Authenticate": "Bearer"} if verdict == 401 else {}
            return Response(b"", status_code=verdict, headers=headers)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _readiness(keep: Keep) -> Response:
    from labkeep.errors import LabkeepError

    reasons: list[str] = []
    try:
        keep.catalog.check_schema()
    except LabkeepError as exc:
        reasons.append(f"catalog: {exc.message}")
    if not keep.tree.base.is_dir():
        reasons.append("tree: its folder is missing (unmounted?)")
    if not reasons:
        from sqlalchemy import select

        from labkeep.catalog import Store
        from labkeep.ops.stores import backend

        try:
            with keep.catalog.read() as session:
                rows = list(session.execute(select(Store).where(Store.kind != "tree")).scalars())
                session.expunge_all()
        except LabkeepError as exc:
            rows = []
            reasons.append(f"catalog: {exc.message}")
        for row in rows:
            try:
                store = backend(row)
                try:
                    health = store.check()
                finally:
                    store.close()
            except LabkeepError as exc:
                reasons.append(f"store {row.name}: {exc.message}")
                continue
            if not health.reachable:
                reasons.append(f"store {row.name}: {health.message or 'unreachable'}")
    if reasons:
        return JSONResponse(
            {"status": "error", "ready": False, "reasons": reasons},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ok", "ready": True})
