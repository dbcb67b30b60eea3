"""The JSON API against its own OpenAPI schema, with schemathesis, over real HTTP.

The schema is the one the live server serves at /api/v1/openapi.json. Every operation is
called with generated data (valid and invalid), authenticated as a site admin with a
bearer token, on a keep that holds project "p", dataset "p/d" with files, a group, a
user, a share link and spare tokens; path parameters are sometimes swapped for those real
names so that the routes get past "not found" too. Checked for every response:

- no 5xx (not_a_server_error);
- the status code, content type, headers and body are the ones the schema documents;
- invalid input (negative data) is rejected with a 4xx;
- valid input (positive data) is never refused as malformed: 422 would mean the schema
  promises more than the server accepts (400 stays allowed: names, addresses and
  durations are free strings in the schema and validated by the Keep).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.test_access import queued_run
from tests.webserver import LiveServer

MAX_EXAMPLES = 6
PASSWORD = "a long enough password"


@dataclass
class Live:
    server: LiveServer
    keep: Keep
    token: str
    token_id: int
    spare_token_id: int
    link_id: int


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from argon2 import PasswordHasher

    from labkeep.access import secrets

    tmp = tmp_path_factory.mktemp("api-schema")
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LABKEEP_")]:
            mp.delenv(name)
        mp.setattr(secrets, "_hasher", lambda: cheap)  # small settings: many logins
        keep = Keep.init(tmp / "keep")
        try:
            keep.create_group("g")
            keep.add_user("u", password=PASSWORD)
            keep.set_member("g", "u", "member")
            keep.create_project("p", group="g")
            keep.ingest(src, "p/d")
            _, link = keep.create_share("p/d", expires="1d")
            _, spare = keep.create_token("spare", expires="1d")
            token, info = keep.create_token("schemathesis", expires="1d")
            with LiveServer(keep) as server:
                yield Live(server, keep, token, info.id, spare.id, link.id)
        finally:
            keep.close()
            unseal_tree(tmp)


def _operations() -> list[str]:
    """``METHOD /path`` of the API's routes, known at collection time without a keep."""
    from labkeep.web.api import router
    from labkeep.web.api_jobs import router as jobs_router
    from labkeep.web.api_meta import router as meta_router
    from labkeep.web.api_runs import router as runs_router

    return sorted(
        f"{method} {route.path.replace('{path:path}', '{path}')}"
        for route in [*router.routes, *jobs_router.routes, *runs_router.routes, *meta_router.routes]
        for method in getattr(route, "methods", ())
    )


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    """The schema as the live server serves it."""
    config = schemathesis.Config.from_dict(
        {
            # NUL is refused in every text field (422): PostgreSQL cannot store it
            "generation": {"database": "none", "allow-x00": False},
            # names, addresses and durations are free strings in the schema; the Keep
            # refuses bad ones with 400 (never 422: that would be a schema mismatch)
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
                }
            },
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{live.server.url}/api/v1/openapi.json", config=config, timeout=30
    )
    real: dict[str, Any] = {
        "project": "p",
        "dataset": "d",
        "path": "raw/a.txt",
        "group": "g",
        "user": "u",
        "name": "u",
        "link_id": live.link_id,
        "token_id": live.spare_token_id,
        "job_id": live.keep.enqueue("verify", {"target": "p/d"}).id,
        "run_id": queued_run(live.keep, "p/d"),
    }

    @schema.hook  # type: ignore[untyped-decorator]
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        """Half the time, the names of things that exist."""
        if not path_parameters:
            return st.just(path_parameters)
        existing = {key: real.get(key, value) for key, value in path_parameters.items()}
        return st.sampled_from([path_parameters, existing])

    return schema


def _checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        positive_data_acceptance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
        positive_data_acceptance,
    ]


MULTIPART_OPERATIONS = {"POST /api/v1/datasets/{project}/{dataset}/files"}


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("operation", _operations())
def test_api_conforms_to_its_schema(api_schema: Any, live: Live, operation: str, mode: str) -> None:
    """Generated calls of one operation (schemathesis' strategies driven by Hypothesis;
    its pytest plugin's fixture-based loader does not work with pytest 9)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    method, path = operation.split(" ", 1)
    api_operation = api_schema[path][method]
    strategy = api_operation.as_strategy(schemathesis.GenerationMode(mode))
    checks = _checks()
    if operation in MULTIPART_OPERATIONS:
        # multipart form fields are text on the wire: schemathesis' "negative" values for
        # them (JSON objects, numbers, unknown field names) arrive as valid strings, so
        # accepting them is no schema violation; everything else is still checked
        checks = [c for c in checks if c.__name__ != "negative_data_rejection"]
    headers = {"Authorization": f"Bearer {live.token}"}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        # the same examples on every run: CI must not pass or fail by chance (run with
        # --hypothesis-seed=N after removing this to explore further)
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report shows the call
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        if case.path_parameters and case.path_parameters.get("token_id") == live.token_id:
            case.path_parameters["token_id"] = live.spare_token_id  # keep our token alive
        case.call_and_validate(headers=headers, checks=checks, timeout=30)

    try:
        run()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid input to send
        assert mode == "negative", "no valid input could be generated"
    # the generated calls did not revoke or disable what they ran with (else the run
    # would have proved little)
    with live.server.client() as client:
        assert client.get("/api/v1/whoami", headers=headers).status_code == 200


def test_schema_covers_every_api_route(live: Live) -> None:
    """Every API route is in the served schema (so the test above calls all of them)."""
    from tests.test_api_matrix import api_routes

    with live.server.client() as client:
        served = client.get("/api/v1/openapi.json").json()
    documented = {
        f"{method.upper()} {path}" for path, item in served["paths"].items() for method in item
    }
    assert live.server.app is not None
    routes = {r.replace("{path:path}", "{path}") for r in api_routes(live.server.app)}
    assert routes == documented
