"""The Keep: one installation, and the Python API every front end calls.

    keep = Keep.open("/srv/keep")
    keep.create_project("imaging-2026", title="Confocal screen 2026")
    report = keep.ingest("/mnt/buffer/run-17", "imaging-2026/s017-confocal")

Each use case lives in its own module under ``labkeep.ops`` and is bound here as a
method, so the CLI, the web server, workers and scripts share one implementation. The
modules are imported on first use (``labkeep ls`` loads no ingest, verify or web code).
"""

from __future__ import annotations

import copy
import importlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from labkeep.access import Principal
from labkeep.catalog import Catalog, KeepState, Store
from labkeep.clock import utcnow
from labkeep.config import CONFIG_NAME, Config, find_root, render_template
from labkeep.errors import KeepExists
from labkeep.storage import TreeStore


class _UseCase:
    """A Keep method whose module is imported when it is first used."""

    def __init__(self, module: str, function: str) -> None:
        self.module, self.function = module, function

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type) -> Callable[..., Any]:
        func: Callable[..., Any] = getattr(
            importlib.import_module(f"labkeep.ops.{self.module}"), self.function
        )
        setattr(owner, self.name, func)  # from now on a plain method
        return func if obj is None else func.__get__(obj, owner)


class _LazyOps:
    """``ops.MODULE.FUNCTION`` as a :class:`_UseCase`, so the list of the Keep's methods
    below reads (and type-checks) as if it bound the functions themselves."""

    class _Module:
        def __init__(self, module: str) -> None:
            self._module = module

        def __getattr__(self, function: str) -> _UseCase:
            return _UseCase(self._module, function)

    def __getattr__(self, module: str) -> _Module:
        return self._Module(module)


if TYPE_CHECKING:
    from labkeep import ops
else:
    ops = _LazyOps()


class Keep:
    """An open keep: its config, catalog and primary tree store."""

    def __init__(self, config: Config, *, principal: Principal | None = None) -> None:
        self.config = config
        self.root = config.root
        self.catalog = Catalog(config.catalog_url, retry_seconds=config.catalog_retry_seconds)
        self.tree = TreeStore(config.data_path, leases=self._lease)
        self._principal = principal
        self._owns_catalog = True

    def _lease(self, name: str, what: str, busy: str) -> Any:
        from labkeep.ops.leases import lease

        return lease(self, name, what=what, busy=busy)

    # -- who is acting -------------------------------------------------------------------
    @property
    def principal(self) -> Principal:
        """Who is acting. Defaults to the labkeep user mapped to the OS account."""
        if self._principal is None:
            from labkeep.ops.accounts import local_principal

            self._principal = local_principal(self, _os_user())
        return self._principal

    @property
    def actor(self) -> str:
        """The name recorded in versions and events."""
        p = self.principal
        if p.kind == "user":
            return p.name
        if p.kind == "share" and p.share is not None:
            return f"share:{p.share.link_id}"
        return p.name

    def acting_as(self, principal: Principal) -> Keep:
        """The same keep (same catalog connection pool) acting as *principal*.

        This is how the web server and workers act for the people they serve; closing the
        returned Keep does not close the shared catalog.
        """
        other = copy.copy(self)
        other._principal = principal
        other._owns_catalog = False
        return other

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(
        cls, root: str | os.PathLike[str] | None = None, *, principal: Principal | None = None
    ) -> Keep:
        """Open an existing keep (see :func:`labkeep.config.find_root` for *root*).

        Without *principal* the keep acts as the labkeep user mapped to the OS account
        (see :func:`labkeep.ops.accounts.local_principal`).
        """
        config = Config.load(find_root(root))
        keep = cls(config, principal=principal)
        try:
            keep.catalog.check_schema()
        except BaseException:
            keep.close()
            raise
        return keep

    @classmethod
    def init(
        cls,
        root: str | os.PathLike[str],
        *,
        catalog_url: str | None = None,
        data_path: str | None = None,
        admin: str | None = None,
    ) -> Keep:
        """Create a keep at *root*: ``labkeep.toml``, the catalog and the tree folder.

        The OS account running this becomes the first site admin (labkeep user *admin*,
        by default named after the OS account).
        """
        root_path = Path(root).expanduser().absolute()
        if (root_path / CONFIG_NAME).exists():
            raise KeepExists(
                f"{root_path} already holds a keep",
                hint="open it with --root, or pick another folder",
            )
        root_path.mkdir(parents=True, exist_ok=True)
        text = render_template(catalog_url or "sqlite:///catalog.db", data_path or "data")
        (root_path / CONFIG_NAME).write_text(text, encoding="utf-8")
        keep = cls(Config.load(root_path))
        try:
            keep.tree.base.mkdir(parents=True, exist_ok=True)
            keep.config.verify_log_dir.mkdir(parents=True, exist_ok=True)
            keep.catalog.upgrade()
            with keep.catalog.write() as session:
                if session.get(KeepState, "keep_id") is None:
                    session.add(KeepState(key="keep_id", value=str(uuid.uuid4())))
                    session.add(
                        Store(
                            name="tree",
                            kind="tree",
                            tier="hot",
                            location=str(keep.tree.base),
                            created_at=utcnow(),
                        )
                    )
                    from labkeep.ops.accounts import create_first_admin
                    from labkeep.ops.audit import append_event

                    user = create_first_admin(session, _os_user(), admin)
                    append_event(
                        session, user.name, "init", str(root_path), {"site_admin": user.name}
                    )
        except BaseException:
            keep.close()
            raise
        return keep

    def close(self) -> None:
        if self._owns_catalog:
            self.catalog.close()

    def __enter__(self) -> Keep:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Keep({str(self.root)!r})"

    # -- use cases -------------------------------------------------------------------
    create_project = ops.projects.create_project
    list_projects = ops.projects.list_projects
    get_project = ops.projects.get_project
    update_project = ops.projects.update_project
    update_dataset = ops.projects.update_dataset
    create_dataset = ops.projects.create_dataset
    list_datasets = ops.projects.list_datasets
    get_dataset = ops.projects.get_dataset
    ls = ops.listing.ls
    stream_entries = ops.listing.stream_entries
    stat_file = ops.files.stat_file
    open_file = ops.files.open_file
    files_for_download = ops.files.files_for_download
    has_file = ops.files.has_file
    export_file = ops.files.export_file
    export = ops.export.export
    versions = ops.listing.versions
    diff = ops.versions.diff
    save = ops.save.save
    restore = ops.save.restore
    # key-values, samples, search
    get_values = ops.keyvalues.get_values
    set_values = ops.keyvalues.set_values
    unset_values = ops.keyvalues.unset_values
    set_kv_schema = ops.keyvalues.set_kv_schema
    get_kv_schema = ops.keyvalues.get_kv_schema
    add_sample = ops.samples.add_sample
    update_sample = ops.samples.update_sample
    get_sample = ops.samples.get_sample
    list_samples = ops.samples.list_samples
    link_sample = ops.samples.link_sample
    unlink_sample = ops.samples.unlink_sample
    search = ops.search.search
    reindex_search = ops.search.reindex
    # runs and provenance
    run = ops.runs.run
    rerun = ops.runs.rerun
    get_run = ops.runs.get_run
    list_runs = ops.runs.list_runs
    runs_from = ops.runs.runs_from
    runs_of_version = ops.runs.runs_of_version
    run_of_version = ops.runs.run_of_version
    run_outputs = ops.runs.run_outputs
    differing_outputs = ops.runs.differing_outputs
    export_provenance = ops.runs.export_provenance
    cancel_run = ops.run_slurm.cancel_run
    # publishing
    get_metadata = ops.metadata.get_metadata
    set_metadata = ops.metadata.set_metadata
    datacite = ops.metadata.datacite
    release = ops.release.release
    releases_of = ops.release.releases_of
    release_files = ops.release.version_files
    dataset_view = ops.listing.dataset_view
    ingest = ops.ingest.ingest
    write_manifest = ops.manifests.write_manifest
    read_manifest = ops.manifests.read_manifest
    iter_manifest = ops.manifests.iter_manifest
    seal = ops.seal.seal
    unseal = ops.seal.unseal
    verify = ops.verify.verify
    verification = ops.verify.verification
    upload = ops.upload.upload
    begin_upload = ops.upload.begin_upload
    events = ops.audit.events
    check_events = ops.audit.check_events
    status = ops.status.status
    # stores and copies
    add_store = ops.stores.add_store
    list_stores = ops.stores.list_stores
    remove_store = ops.stores.remove_store
    get_policy = ops.stores.get_policy
    set_policy = ops.stores.set_policy
    copy = ops.copies.copy
    get = ops.copies.get
    drop = ops.copies.drop
    move = ops.copies.move
    whereis = ops.whereis.whereis
    copies_of = ops.whereis.copies_of
    verify_store = ops.repair.verify_store
    repair_tree = ops.repair.repair_tree
    policy_check = ops.whereis.policy_check
    policy_apply = ops.whereis.policy_apply
    # background work
    enqueue = ops.jobs.enqueue
    list_jobs = ops.jobs.list_jobs
    get_job = ops.jobs.get_job
    job_counts = ops.jobs.job_counts
    cancel_job = ops.jobs.cancel_job
    retry_job = ops.jobs.retry_job
    dataset_jobs = ops.jobs.dataset_jobs
    queue_summary = ops.jobs.queue_summary
    workers = ops.worker.workers
    # watched buffers
    add_watch = ops.watch.add_watch
    list_watches = ops.watch.list_watches
    get_watch = ops.watch.get_watch
    remove_watch = ops.watch.remove_watch
    scan_watch = ops.watch.scan
    retry_buffer_folders = ops.watch.retry_folders
    buffer_status = ops.buffers.buffer_status
    clean_buffer = ops.buffers.clean
    visible_buffers = ops.buffer_access.visible_buffers
    browse_buffer = ops.buffer_access.browse_buffer
    import_folder = ops.buffer_access.import_folder
    show_buffer_to = ops.buffer_access.show_buffer_to
    # accounts and access
    add_user = ops.accounts.add_user
    list_users = ops.accounts.list_users
    set_user_disabled = ops.accounts.set_disabled
    set_password = ops.accounts.set_password
    whoami = ops.accounts.whoami
    ensure_admin_password = ops.accounts.ensure_admin_password
    create_group = ops.accounts.create_group
    set_member = ops.accounts.set_member
    list_groups = ops.accounts.list_groups
    authenticate_password = ops.accounts.authenticate_password
    principal_for = ops.accounts.principal_for
    grant = ops.grants.grant
    revoke = ops.grants.revoke
    list_grants = ops.grants.list_grants
    set_public = ops.grants.set_public
    create_share = ops.shares.create_share
    list_shares = ops.shares.list_shares
    revoke_share = ops.shares.revoke_share
    open_share = ops.shares.open_share
    count_download = ops.shares.count_download
    create_token = ops.tokens.create_token
    list_tokens = ops.tokens.list_tokens
    revoke_token = ops.tokens.revoke_token
    authenticate_token = ops.tokens.authenticate_token
    login = ops.sessions.login
    login_token = ops.sessions.login_token
    resume_session = ops.sessions.resume_session
    logout = ops.sessions.logout


def _os_user() -> str:
    """The OS account running this process, from the process's uid (not from $USER or
    $LOGNAME, which anyone can set)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid:{os.geteuid()}"
