"""``labkeep.toml``: where a keep's catalog and tree live, and its tunables.

Finding a keep: ``--root``, then ``LABKEEP_ROOT``, then the nearest folder upwards from
the current one that holds ``labkeep.toml`` (as git finds ``.git``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkeep.errors import ConfigError, KeepNotFound

CONFIG_NAME = "labkeep.toml"

TEMPLATE = """\
# labkeep keep configuration. Paths are relative to this file's folder.

[catalog]
# SQLite file in the keep (default), or a PostgreSQL URL such as
# "postgresql+psycopg://labkeep:SECRET@db.example.org/labkeep"
url = {catalog_url}
# how long a command keeps retrying an unreachable catalog (a restart, a network blip)
# before it stops with exit code 3; the web server waits at most 2 s per request
retry_seconds = 30

[tree]
# the human-readable primary store: data/PROJECT/DATASET/raw/...
path = {data_path}

[ingest]
# parallel file workers; 0 means one per CPU core
jobs = 0
# "batch": one filesystem sync per batch of files (fast, Linux);
# "file": fsync every file (portable, slower for many small files)
durability = "batch"
batch_files = 2000

[verify]
# where verify_YYYY-MM-DD.log files are written
log_dir = "logs"

# Accounts created with 'labkeep user add NAME --ldap' (and LDAP users signing in for the
# first time) check their passwords against this directory:
# [ldap]
# url = "ldaps://ldap.example.org"
# user_dn = "uid={{user}},ou=people,dc=example,dc=org"
# start_tls = false

[web]
# public base URL, used in printed share links and landing pages' metadata
base_url = ""
# sub-path when served behind a reverse proxy (e.g. "/labkeep"); "" at the root
root_path = ""
# Secure cookies: "auto" (when the request came over https), "true" or "false"
secure_cookies = "auto"
# reverse proxies whose X-Forwarded-For/-Proto headers are trusted
forwarded_allow_ips = "127.0.0.1"
# largest upload through the web or the API (bytes; 2 GiB), and largest JSON body and
# form of any other request (256 KiB each; max_body_bytes sets both): larger ones are
# refused with 413 before they are read
max_upload_bytes = 2147483648
max_json_bytes = 262144
max_form_bytes = 262144

# Versions of datasets ('labkeep save'): every saved content is kept in this store (made
# as an objects folder at "path" on first use when it does not exist); see docs/versions.md
[versions]
store = "versions"
path = "versions"

# Recorded runs ('labkeep run'): staging for inputs and outputs on the keep's disk, and
# the scratch folder that SLURM jobs see on the compute nodes (shared with this host)
[runs]
staging = "runs"
scratch = "scratch"
poll_seconds = 10

# Publishing ('labkeep meta edit', 'release', 'export', 'publish'): see docs/publishing.md
[publish]
# DataCite's publisher of this keep's datasets unless their metadata names one
# (your institute or facility, e.g. "Imaging Facility, Example University")
publisher = ""
# Repositories for 'labkeep publish P/D --to NAME' (InvenioRDM's REST API; Zenodo runs
# InvenioRDM). Tokens come from LABKEEP_<NAME>_TOKEN (LABKEEP_<NAME>_SANDBOX_TOKEN with
# --sandbox) or from the "token"/"sandbox_token" of section "profile" of an INI
# credentials_file; they are never stored in the catalog.
# [publish.zenodo]
# url = "https://zenodo.org"
# sandbox_url = "https://sandbox.zenodo.org"
# max_files = 100
# [publish.invenio]
# url = "https://repository.example.org"
# credentials_file = "/etc/labkeep/publish.ini"
# profile = "invenio"

# Background work ('labkeep worker'): see docs/jobs.md
[jobs]
# a running job's lease: a worker renews it every third of this; a job whose worker
# stopped renewing (killed, host lost) is taken by another worker once it runs out
lease_seconds = 60
# attempts before a job fails for good; retries wait retry_base_seconds, doubling each
# time up to retry_max_seconds
max_attempts = 5
retry_base_seconds = 30
retry_max_seconds = 3600
# how often an idle worker looks for new jobs
poll_seconds = 1.0
# modules registering further job kinds (also found through the "labkeep.jobs" entry points)
plugins = []

# Periodic work, queued once per period however many workers run:
# [[jobs.schedule]]
# kind = "scrub"          # re-verify sealed datasets not verified for max_age_days
# every = "1d"
# args = {{ max_age_days = 90, bandwidth = "200MB" }}
# [[jobs.schedule]]
# kind = "buffer-clean"   # delete buffer copies that are safely kept and old enough
# every = "1d"

# Catalog backups ('labkeep backup', 'backup drill', 'restore-catalog'): see
# docs/operations.md. "store" names a store of 'labkeep store list'; "path" is an objects
# folder used when no such store exists (and to find backups when the catalog is lost).
# Rotation keeps the newest backup of each of the last N days, weeks and months.
[backup]
store = "backup"
path = ""
daily = 7
weekly = 5
monthly = 12
# the status page and 'labkeep status' warn when the last good drill is older than this
drill_max_age = "8d"
# files re-hashed by a drill
drill_sample = 20

# Prometheus metrics at /metrics (see docs/operations.md): a scraper needs the token
# ("Authorization: Bearer TOKEN"; or set LABKEEP_METRICS_TOKEN) or an address listed in
# "allow" (addresses or networks); anyone else gets 401/403. Gauges read from the catalog
# are cached for cache_seconds.
[metrics]
token = ""
allow = []
cache_seconds = 15
# Metadata read from files and previews (docs/metadata.md): after each ingest or save a
# job reads every new file in a child process (a reader that crashes or hangs costs one
# error record) and makes thumbnails of images into the cache folder
[extract]
after_ingest = true
previews = true
# a file whose reader takes longer than this is recorded as an error
timeout_seconds = 60
cache = "cache"
# further extractors as "module:Class" (also found through the "labkeep.extractors"
# entry points)
plugins = []

# Buttons on file pages that open a file in another service, e.g.:
# [[web.links]]
# name = "Image viewer"
# pattern = "*.tif"
# url = "https://viewer.example.org/open?src={{url}}"
# and on sample pages (an ELN or LIMS entry of the sample):
# [[web.links]]
# name = "ELN"
# on = "sample"
# url = "https://eln.example.org/samples/{{sample}}"
"""


@dataclass(frozen=True)
class LdapConfig:
    """An LDAP directory that checks passwords of accounts with source ``ldap``."""

    url: str
    #: DN of a user, with {user} for the (escaped) user name
    user_dn: str
    start_tls: bool = False
    timeout: float = 5.0


@dataclass(frozen=True)
class LinkOut:
    """A button on file pages that opens the file in another service (viewer, Jupyter)."""

    name: str
    #: glob on the file name, e.g. "*.tif"
    pattern: str
    #: URL template: {project} {dataset} {path} {url} (the file's download URL); on
    #: sample pages (``on = "sample"``, e.g. the sample's ELN or LIMS entry): {sample}
    #: {type} and {attr.NAME} (an attribute of the sample)
    url: str
    #: which pages show it: file | sample
    on: str = "file"


@dataclass(frozen=True)
class WebConfig:
    #: public base URL (for links printed by the CLI and in JSON-LD), e.g. https://data.example.org
    base_url: str = ""
    #: path prefix when served behind a reverse proxy under a sub-path, e.g. /labkeep
    root_path: str = ""
    #: "auto": Secure cookies when the request came over https; true/false to force
    secure_cookies: str = "auto"
    #: addresses of reverse proxies whose X-Forwarded-* headers are trusted
    forwarded_allow_ips: str = "127.0.0.1"
    #: largest upload (web form or API), bytes (large data goes through 'labkeep ingest')
    max_upload_bytes: int = 2 << 30
    #: largest JSON body and largest form (not an upload) of a request, bytes: a
    #: 10,000-character description is up to 90 KB once escaped as a form field
    max_json_bytes: int = 256 << 10
    max_form_bytes: int = 256 << 10
    links: tuple[LinkOut, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """Periodic work: a job of *kind* queued once per *every* seconds."""

    kind: str
    every: float
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = -10

    @property
    def name(self) -> str:
        return f"{self.kind}:{json.dumps(self.args, sort_keys=True)}"


@dataclass(frozen=True)
class BackupConfig:
    """``[backup]``: where catalog backups go, their rotation, and how fresh a drill must be."""

    #: a store of the catalog (its name), or the name given to *path*'s objects folder
    store: str = "backup"
    #: an objects folder (used when the catalog has no such store, or has no catalog)
    path: Path | None = None
    #: newest backup of each of the last N days / ISO weeks / months is kept
    daily: int = 7
    weekly: int = 5
    monthly: int = 12
    #: warn when the last good drill is older than this (seconds)
    drill_max_age: float = 8 * 86400.0
    #: files re-hashed by a drill
    drill_sample: int = 20


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: who may scrape /metrics, and how long catalog gauges are cached."""

    token: str = ""
    #: client addresses or networks (CIDR) that may scrape without the token
    allow: tuple[str, ...] = ()
    cache_seconds: float = 15.0


@dataclass(frozen=True)
class JobsConfig:
    lease_seconds: float = 60.0
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    poll_seconds: float = 1.0
    plugins: tuple[str, ...] = ()
    schedule: tuple[Schedule, ...] = ()


@dataclass(frozen=True)
class ExtractConfig:
    #: queue an extraction job when ingest or save commits a version
    after_ingest: bool = True
    previews: bool = True
    timeout_seconds: float = 60.0
    plugins: tuple[str, ...] = ()


@dataclass
class Config:
    root: Path
    catalog_url: str
    data_path: Path
    #: keep retrying an unreachable catalog this long before giving up
    catalog_retry_seconds: float = 30.0
    ingest_jobs: int = 0
    durability: str = "batch"
    batch_files: int = 2000
    verify_log_dir: Path = field(default_factory=lambda: Path("logs"))
    ldap: LdapConfig | None = None
    web: WebConfig = field(default_factory=WebConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    #: the store that keeps every saved version's content, and where the keep makes it
    versions_store: str = "versions"
    versions_path: Path = field(default_factory=lambda: Path("versions"))
    #: where runs stage inputs and outputs (on the keep's disk), and the scratch that
    #: batch jobs (SLURM) see on the compute nodes
    runs_path: Path = field(default_factory=lambda: Path("runs"))
    scratch_path: Path = field(default_factory=lambda: Path("scratch"))
    #: how often a worker asks the batch system about a run's job
    runs_poll_seconds: float = 10.0
    #: DataCite's publisher of what this keep releases (an institute, a facility)
    publisher: str = ""
    backup: BackupConfig = field(default_factory=BackupConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    #: derived files (thumbnails), keyed by content: safe to delete
    cache_path: Path = field(default_factory=lambda: Path("cache"))
    #: repositories to deposit in: the [publish.NAME] sections (zenodo, invenio, ...)
    publish_targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Config:
        path = root / CONFIG_NAME
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeepNotFound(
                f"no keep at {root} ({CONFIG_NAME} is missing)",
                hint=f"create one with 'labkeep init {root}'",
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        try:
            catalog = data.get("catalog", {})
            tree = data.get("tree", {})
            ingest = data.get("ingest", {})
            verify = data.get("verify", {})
            ldap = data.get("ldap")
            web = data.get("web", {})
            versions = data.get("versions", {})
            runs = data.get("runs", {})
            url = str(catalog.get("url", "sqlite:///catalog.db"))
            config = cls(
                root=root,
                catalog_url=_resolve_sqlite_url(url, root),
                catalog_retry_seconds=float(catalog.get("retry_seconds", 30)),
                data_path=_resolve(root, str(tree.get("path", "data"))),
                ingest_jobs=int(ingest.get("jobs", 0)),
                durability=str(ingest.get("durability", "batch")),
                batch_files=int(ingest.get("batch_files", 2000)),
                verify_log_dir=_resolve(root, str(verify.get("log_dir", "logs"))),
                ldap=_ldap(ldap) if ldap else None,
                web=_web(web),
                jobs=_jobs(data.get("jobs", {})),
                versions_store=str(versions.get("store", "versions")),
                versions_path=_resolve(root, str(versions.get("path", "versions"))),
                runs_path=_resolve(root, str(runs.get("staging", "runs"))),
                scratch_path=_resolve(root, str(runs.get("scratch", "scratch"))),
                runs_poll_seconds=parse_duration(runs.get("poll_seconds", 10)),
                publisher=str(data.get("publish", {}).get("publisher", "")),
                backup=_backup(root, data.get("backup", {})),
                metrics=_metrics(data.get("metrics", {})),
                extract=_extract(data.get("extract", {})),
                cache_path=_resolve(root, str(data.get("extract", {}).get("cache", "cache"))),
                publish_targets={
                    str(name): dict(section)
                    for name, section in data.get("publish", {}).items()
                    if isinstance(section, dict)
                },
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if config.durability not in ("batch", "file"):
            raise ConfigError(f"{path}: ingest.durability must be 'batch' or 'file'")
        if config.catalog_retry_seconds < 0:
            raise ConfigError(f"{path}: catalog.retry_seconds must not be negative")
        if config.batch_files < 1:
            raise ConfigError(f"{path}: ingest.batch_files must be at least 1")
        return config


def _ldap(section: dict[str, object]) -> LdapConfig:
    url, user_dn = section.get("url"), section.get("user_dn")
    if not isinstance(url, str) or not isinstance(user_dn, str) or "{user}" not in user_dn:
        raise ValueError("[ldap] needs url and user_dn (a DN containing {user})")
    return LdapConfig(
        url=url,
        user_dn=user_dn,
        start_tls=bool(section.get("start_tls", False)),
        timeout=float(section.get("timeout", 5.0)),  # type: ignore[arg-type]
    )


def _web(section: dict[str, Any]) -> WebConfig:
    links = tuple(
        LinkOut(
            str(link["name"]),
            str(link.get("pattern", "*")),
            str(link["url"]),
            str(link.get("on", "file")),
        )
        for link in section.get("links", [])
    )
    return WebConfig(
        base_url=str(section.get("base_url", "")).rstrip("/"),
        root_path=str(section.get("root_path", "")).rstrip("/"),
        secure_cookies=str(section.get("secure_cookies", "auto")).lower(),
        forwarded_allow_ips=str(section.get("forwarded_allow_ips", "127.0.0.1")),
        max_upload_bytes=int(section.get("max_upload_bytes", 2 << 30)),
        max_json_bytes=int(section.get("max_json_bytes", section.get("max_body_bytes", 256 << 10))),
        max_form_bytes=int(section.get("max_form_bytes", section.get("max_body_bytes", 256 << 10))),
        links=links,
    )


def parse_duration(text: str | float | int) -> float:
    """Seconds from "90", "30s", "10m", "6h", "1d" or "2w"."""
    if isinstance(text, int | float):
        return float(text)
    value = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (like 30s, 10m, 6h, 1d, 2w)") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def _jobs(section: dict[str, Any]) -> JobsConfig:
    schedule = tuple(
        Schedule(
            kind=str(item["kind"]),
            every=parse_duration(item.get("every", "1d")),
            args=dict(item.get("args", {})),
            priority=int(item.get("priority", -10)),
        )
        for item in section.get("schedule", [])
    )
    config = JobsConfig(
        lease_seconds=float(section.get("lease_seconds", 60)),
        max_attempts=int(section.get("max_attempts", 5)),
        retry_base_seconds=float(section.get("retry_base_seconds", 30)),
        retry_max_seconds=float(section.get("retry_max_seconds", 3600)),
        poll_seconds=float(section.get("poll_seconds", 1.0)),
        plugins=tuple(str(p) for p in section.get("plugins", [])),
        schedule=schedule,
    )
    if config.lease_seconds < 1 or config.max_attempts < 1 or config.poll_seconds <= 0:
        raise ValueError("[jobs] lease_seconds >= 1, max_attempts >= 1, poll_seconds > 0")
    return config


def _backup(root: Path, section: dict[str, Any]) -> BackupConfig:
    path = str(section.get("path", "") or "")
    config = BackupConfig(
        store=str(section.get("store", "backup")),
        path=_resolve(root, path) if path else None,
        daily=int(section.get("daily", 7)),
        weekly=int(section.get("weekly", 5)),
        monthly=int(section.get("monthly", 12)),
        drill_max_age=parse_duration(section.get("drill_max_age", "8d")),
        drill_sample=int(section.get("drill_sample", 20)),
    )
    if min(config.daily, config.weekly, config.monthly, config.drill_sample) < 0:
        raise ValueError("[backup] daily, weekly, monthly and drill_sample must not be negative")
    return config


def _metrics(section: dict[str, Any]) -> MetricsConfig:
    import ipaddress

    allow = tuple(str(a) for a in section.get("allow", []))
    for item in allow:
        ipaddress.ip_network(item, strict=False)  # ValueError names a bad entry
    return MetricsConfig(
        token=str(section.get("token", "")),
        allow=allow,
        cache_seconds=float(section.get("cache_seconds", 15)),
    )


def _extract(section: dict[str, Any]) -> ExtractConfig:
    config = ExtractConfig(
        after_ingest=bool(section.get("after_ingest", True)),
        previews=bool(section.get("previews", True)),
        timeout_seconds=float(section.get("timeout_seconds", 60)),
        plugins=tuple(str(p) for p in section.get("plugins", [])),
    )
    if config.timeout_seconds <= 0:
        raise ValueError("[extract] timeout_seconds must be positive")
    return config


def _resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _resolve_sqlite_url(url: str, root: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + str(root / rest)
    return url


def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The keep's root folder, from the argument, ``LABKEEP_ROOT`` or the current folder."""
    if root is not None:
        return Path(root).expanduser().absolute()
    env = os.environ.get("LABKEEP_ROOT")
    if env:
        return Path(env).expanduser().absolute()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise KeepNotFound(
        f"no keep found in {here} or any folder above it",
        hint="pass --root, set LABKEEP_ROOT, or create one with 'labkeep init PATH'",
    )


def render_template(catalog_url: str, data_path: str) -> str:
    # JSON string literals are valid TOML basic strings
    return TEMPLATE.format(catalog_url=json.dumps(catalog_url), data_path=json.dumps(data_path))
