"""The Keep: one installation, and the Python API every front end calls.

    keep = Keep.open("/srv/keep")
    keep.create_project("imaging-2026", title="Confocal screen 2026")
    report = keep.ingest("/mnt/buffer/run-17", "imaging-2026/s017-confocal")

Each use case lives in its own module under ``labkeep.ops`` and is bound here as a
method, so the CLI, the web server, workers and scripts share one implementation.
"""

from __future__ import annotations

import getpass
import os
import uuid
from pathlib import Path
from types import TracebackType

from labkeep import ops
from labkeep.catalog import Catalog, KeepState, Store
from labkeep.clock import utcnow
from labkeep.config import CONFIG_NAME, Config, find_root, render_template
from labkeep.errors import KeepExists
from labkeep.storage import TreeStore


class Keep:
    """An open keep: its config, catalog and primary tree store."""

    def __init__(self, config: Config, *, actor: str | None = None) -> None:
        self.config = config
        self.root = config.root
        self.catalog = Catalog(config.catalog_url)
        self.tree = TreeStore(config.data_path)
        #: who is acting: recorded in versions and events
        self.actor = actor or _os_user()

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, *, actor: str | None = None) -> Keep:
        """Open an existing keep (see :func:`labkeep.config.find_root` for *root*)."""
        config = Config.load(find_root(root))
        keep = cls(config, actor=actor)
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
        actor: str | None = None,
    ) -> Keep:
        """Create a keep at *root*: ``labkeep.toml``, the catalog and the tree folder."""
        root_path = Path(root).expanduser().absolute()
        if (root_path / CONFIG_NAME).exists():
            raise KeepExists(
                f"{root_path} already holds a keep",
                hint="open it with --root, or pick another folder",
            )
        root_path.mkdir(parents=True, exist_ok=True)
        text = render_template(catalog_url or "sqlite:///catalog.db", data_path or "data")
        (root_path / CONFIG_NAME).write_text(text, encoding="utf-8")
        keep = cls(Config.load(root_path), actor=actor)
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
                    ops.audit.append_event(
                        session, keep.actor, "init", str(root_path), {"catalog": "created"}
                    )
        except BaseException:
            keep.close()
            raise
        return keep

    def close(self) -> None:
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
    create_dataset = ops.projects.create_dataset
    list_datasets = ops.projects.list_datasets
    get_dataset = ops.projects.get_dataset
    ls = ops.listing.ls
    versions = ops.listing.versions
    ingest = ops.ingest.ingest
    write_manifest = ops.manifests.write_manifest
    seal = ops.seal.seal
    unseal = ops.seal.unseal
    verify = ops.verify.verify
    events = ops.audit.events
    check_events = ops.audit.check_events
    status = ops.status.status


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
