"""/metrics (parsed with Prometheus' own text parser), /readyz, /healthz and the
dashboard's backup-drill warning, against a real server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from labkeep import Keep
from labkeep.config import MetricsConfig
from tests.conftest import make_files
from tests.webserver import LiveServer

TOKEN = "scrape-me-not-a-guess-1234"
PASSWORD = "the admin's long password"


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _one(families: dict, name: str, **labels: str) -> float:
    return families[name][tuple(sorted(labels.items()))]


def test_metrics_need_the_token_and_say_what_the_keep_holds(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    keep.config.metrics = MetricsConfig(token=TOKEN, cache_seconds=0)
    keep.create_project("vault-secret", private=True)
    src = tmp_path / "src"
    made = make_files(src, 9)
    keep.ingest(str(src), "vault-secret/s1", seal=True)
    keep.ingest(str(src), "proj/s1")
    keep.verify("proj/s1")
    keep.enqueue("verify", {"target": "proj/s1"})
    with LiveServer(keep) as server, server.client() as client:
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == status
            assert refused.content == b""  # nothing leaks, not even a project count
        client.get("/api/v1/projects/proj")  # both 404 for anonymous
        client.get("/api/v1/projects/vault-secret")
        client.get("/no/such/page")
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        metrics = _families(answer.text)

    # requests by route template and status, with latencies
    routes = {dict(k)["route"] for k in metrics["labkeep_http_requests_total"]}
    assert "/api/v1/projects/{project}" in routes and "unmatched" in routes
    assert not any("vault" in r or "/no/such" in r for r in routes)
    assert _one(metrics, "labkeep_http_requests_total",
                route="/api/v1/projects/{project}", method="GET", status="404") == 2  # fmt: skip
    assert _one(metrics, "labkeep_http_requests_total",
                route="/metrics", method="GET", status="401") == 1  # fmt: skip
    assert (
        _one(metrics, "labkeep_http_request_duration_seconds_count",
             route="/api/v1/projects/{project}", method="GET") == 2
    )  # fmt: skip
    assert _one(metrics, "labkeep_http_auth_failures_total") >= 1
    # what the catalog holds
    assert _one(metrics, "labkeep_project_datasets", project="vault-secret") == 1
    assert _one(metrics, "labkeep_project_files", project="proj") == len(made)
    assert _one(metrics, "labkeep_project_bytes", project="proj") == sum(map(len, made.values()))
    assert _one(metrics, "labkeep_datasets", sealed="true") == 1
    assert _one(metrics, "labkeep_datasets", sealed="false") == 1
    assert _one(metrics, "labkeep_ingested_files_total") == 2 * len(made)
    assert _one(metrics, "labkeep_tree_files", state="ok") == len(made)
    assert _one(metrics, "labkeep_tree_files", state="never") == len(made)
    assert _one(metrics, "labkeep_jobs_queued", kind="verify") == 1
    assert _one(metrics, "labkeep_jobs_oldest_queued_seconds", kind="verify") >= 0
    assert 0 <= _one(metrics, "labkeep_last_age_seconds", what="verify") < 600
    assert ("what", "drill") not in {k[0] for k in metrics["labkeep_last_age_seconds"]}
    assert _one(metrics, "labkeep_datasets_below_policy") == 0


def test_an_allow_listed_address_scrapes_without_the_token(keep: Keep) -> None:
    keep.config.metrics = MetricsConfig(allow=("127.0.0.0/8",), cache_seconds=5)
    with LiveServer(keep) as server, server.client() as client:
        answer = client.get("/metrics")
        assert answer.status_code == 200
        assert "labkeep_project_datasets" in answer.text
        # a token that is wrong is refused even from an allowed address
        assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 403


def test_readyz_checks_the_catalog_and_stores(keep: Keep, tmp_path: Path) -> None:
    folder = tmp_path / "backup-disk"
    folder.mkdir()
    keep.add_store("backup", kind="objects", path=str(folder))
    with LiveServer(keep) as server, server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ok", "ready": True}
        shutil.rmtree(folder)  # the backup disk is unmounted
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert any(r.startswith("store backup:") for r in answer.json()["reasons"])
        assert client.get("/healthz").status_code == 200  # liveness stays cheap


def test_the_dashboard_warns_until_a_drill_passes(keep: Keep, tmp_path: Path) -> None:
    admin = keep.principal.name
    keep.set_password(admin, PASSWORD)
    src = tmp_path / "src"
    make_files(src, 4)
    keep.ingest(str(src), "proj/s1")
    (tmp_path / "backups").mkdir()
    keep.add_store("backup", kind="objects", path=str(tmp_path / "backups"))
    with LiveServer(keep) as server, server.client() as client:
        token = re.search(r'name="csrf_token" value="([^"]*)"', client.get("/login").text)
        assert token
        signed = client.post(
            "/login", data={"name": admin, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert signed.status_code == 303
        assert "labkeep backup drill" in _attention(client)
        keep.backup()
        assert keep.drill_backup(sample=2).ok
        assert "backup drill" not in _attention(client)


def _attention(client: httpx.Client) -> str:
    page = client.get("/").text
    match = re.search(r'<section class="attention".*?</section>', page, re.S)
    return match.group(0) if match else ""


def test_the_grafana_dashboard_uses_only_metrics_the_server_exposes(
    keep: Keep, tmp_path: Path
) -> None:
    import json

    keep.config.metrics = MetricsConfig(token=TOKEN, cache_seconds=0)
    keep.enqueue("verify", {"target": "proj"})
    (tmp_path / "b").mkdir()
    keep.add_store("b", kind="objects", path=str(tmp_path / "b"))
    with LiveServer(keep) as server, server.client() as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    # every family is described (HELP/TYPE) even while it has no samples
    exposed = set(_families(text)) | {f.name for f in text_string_to_metric_families(text)}
    dashboard = json.loads(
        (Path(__file__).parents[1] / "deploy" / "grafana" / "labkeep.json").read_text()
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"labkeep_[a-z_]+", target["expr"])
    }
    assert used and used <= exposed, used - exposed
