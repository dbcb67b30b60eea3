"""File-system ACLs on the tree that follow the grants (``labkeep acl sync``).

So that SMB and NFS exports of the tree give each person exactly their grants, every
folder on the way to a dataset, and the dataset's working tree, carries POSIX ACLs
computed from the access policy (:func:`labkeep.access.policy.permission`) for each
labkeep account mapped to an OS account:

- the tree's folder: ``--x`` for everyone with any access (they pass, never list);
- a project's folder: ``r-x`` with read on the project, ``--x`` with a dataset grant only;
- a dataset's folder and its working tree (everything but ``raw/`` and ``.labkeep/``):
  ``r-x`` for read, ``rwx`` for write and manage, files ``r--``/``rw-``; the same as the
  folders' default ACL so that files people create inherit it (with an entry for the
  account that runs labkeep, which must read them to ``save``); the dataset folder gets
  the sticky bit, so nobody but labkeep removes or renames ``raw/``,
  ``MANIFEST.sha256`` or ``.labkeep/``;
- ``raw/`` is not touched: it is read-only for everyone but labkeep by its mode (and
  write-once, ``chattr +i``, once sealed); whoever may pass the dataset's folder reads it;
- ``.labkeep/`` (labkeep's own files): nobody but labkeep;
- public datasets: ``other`` gets read (and passage to them).

The owner's group and ``other`` get nothing otherwise: the ACL says who, not the mode.
Mapping (``[acl]`` in labkeep.toml): ``users = {alice = "asmith"}`` first, then the
account's ``os_user``, then an OS account of the same name when ``same_names = true``
(the default). Accounts that map to nothing get no access and are reported.

Idempotent: the current ACLs are read (``getfacl``) and only what differs is written
(``setfacl --restore``); ``dry_run`` reports without writing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from labkeep.access import Permission, check
from labkeep.access.policy import permission
from labkeep.catalog import Dataset, Project, User
from labkeep.config import CONFIG_NAME
from labkeep.errors import ConfigError, StorageError
from labkeep.ops._access import find_project, load_principal, project_resource
from labkeep.results import Report, Result
from labkeep.storage._tree import PRIVATE_DIR

if TYPE_CHECKING:
    from labkeep.keep import Keep

RAW = "raw"
#: paths per getfacl call
BATCH = 500


@dataclass(frozen=True)
class AclConfig:
    users: dict[str, str] = field(default_factory=dict)
    same_names: bool = True

    @classmethod
    def load(cls, root: Path) -> AclConfig:
        try:
            with open(root / CONFIG_NAME, "rb") as f:
                section = tomllib.load(f).get("acl", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {root / CONFIG_NAME}: {exc}") from None
        users = section.get("users", {})
        if not isinstance(users, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in users.items()
        ):
            raise ConfigError('[acl] users must map labkeep names to OS names: {alice = "asmith"}')
        return cls(users=dict(users), same_names=bool(section.get("same_names", True)))


def _os_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class _Access:
    """Who gets what on one dataset: OS account -> permission, and whether it is public."""

    levels: dict[str, Permission]
    public: bool


def _rwx(level: Permission, *, folder: bool, executable: bool = False) -> str:
    if level >= Permission.WRITE:
        return "rwx" if folder or executable else "rw-"
    if level >= Permission.READ:
        return "r-x" if folder or executable else "r--"
    return "---"


def _acl(
    owner: str,
    named: dict[str, str],
    other: str,
    *,
    default_for: dict[str, str] | None = None,
    default_other: str = "---",
) -> list[str]:
    """An ACL in getfacl's text form (with the mask that lets every named entry through)."""
    lines = [f"user::{owner}"]
    lines += [f"user:{name}:{perms}" for name, perms in sorted(named.items())]
    lines.append("group::---")
    if named:
        lines.append(f"mask::{_union(list(named.values()))}")
    lines.append(f"other::{other}")
    if default_for is not None:
        lines.append(f"default:user::{owner}")
        lines += [f"default:user:{n}:{p}" for n, p in sorted(default_for.items())]
        lines.append("default:group::---")
        if default_for:
            lines.append(f"default:mask::{_union(list(default_for.values()))}")
        lines.append(f"default:other::{default_other}")
    return lines


def _union(perms: list[str]) -> str:
    out = ["-", "-", "-"]
    for p in perms:
        for i, c in enumerate(p):
            if c != "-":
                out[i] = c
    return "".join(out)


def acl_sync(keep: Keep, project: str | None = None, *, dry_run: bool = False) -> Report:
    """Set the tree's ACLs from the grants (all projects, or *project*); site admins."""
    check(keep.principal, "keep.admin")
    if shutil.which("setfacl") is None or shutil.which("getfacl") is None:
        raise StorageError(
            "setfacl and getfacl are not installed",
            hint="install the 'acl' package (apt-get install acl)",
        )
    config = AclConfig.load(keep.root)
    report = Report("acl", info={"dry_run": dry_run, "changed": 0, "unmapped": []})
    service = pwd.getpwuid(os.geteuid()).pw_name
    with keep.catalog.read() as session:
        users = list(session.execute(select(User).where(User.disabled.is_(False))).scalars())
        accounts: list[tuple[str, object]] = []
        for user in users:
            os_name = config.users.get(user.name) or user.os_user
            if os_name is None and config.same_names and _os_account(user.name):
                os_name = user.name
            if os_name is None or not _os_account(os_name):
                report.info["unmapped"].append(user.name)
                continue
            if os_name == service:
                continue  # labkeep's own account owns the tree
            accounts.append((os_name, load_principal(session, user)))
        if project is not None:
            projects = [find_project(keep, session, project)]
        else:
            projects = list(session.execute(select(Project).order_by(Project.name)).scalars())
        plan: dict[str, dict[str, _Access]] = {}
        for proj in projects:
            rows = session.execute(
                select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
            ).scalars()
            plan[proj.name] = {}
            project_levels = {
                os_name: permission(principal, project_resource(session, proj))  # type: ignore[arg-type]
                for os_name, principal in accounts
            }
            plan[proj.name][""] = _Access(project_levels, False)
            for ds in rows:
                resource = project_resource(session, proj, ds)
                levels = {
                    os_name: permission(principal, resource)  # type: ignore[arg-type]
                    for os_name, principal in accounts
                }
                plan[proj.name][ds.name] = _Access(levels, bool(ds.public))
    # what each path should carry
    wanted: dict[Path, list[str]] = {}
    passing: set[str] = set()
    any_public = False
    for proj_name, accesses in plan.items():
        proj_dir = keep.tree.base / proj_name
        project_access = accesses.pop("")
        named: dict[str, str] = {}
        proj_public = False
        for access in accesses.values():
            for os_name, level in access.levels.items():
                if level >= Permission.READ:
                    named.setdefault(os_name, "--x")
            proj_public = proj_public or access.public
        for os_name, level in project_access.levels.items():
            if level >= Permission.READ:
                named[os_name] = "r-x"
        passing |= set(named)
        any_public = any_public or proj_public
        if proj_dir.is_dir():
            wanted[proj_dir] = _acl("rwx", named, "--x" if proj_public else "---")
        for ds_name, access in accesses.items():
            ds_dir = proj_dir / ds_name
            if ds_dir.is_dir():
                for path, lines in _dataset_acls(ds_dir, access, service):
                    wanted[path] = lines
                report.add(Result("acl", "ok", dataset=f"{proj_name}/{ds_name}"))
    if keep.tree.base.is_dir():
        base_named = {name: "--x" for name in passing}
        if project is not None:  # keep who passes for other projects
            base_named.update(_current_named(keep.tree.base))
        wanted[keep.tree.base] = _acl("rwx", base_named, "--x" if any_public else "---")
        private = keep.tree.base / PRIVATE_DIR
        if private.is_dir():
            wanted[private] = _acl("rwx", {}, "---")
    changed = _apply(wanted, dry_run)
    report.info["changed"] = len(changed)
    report.info["paths"] = len(wanted)
    report.info["changed_paths"] = [str(p) for p in changed[:100]]
    if not dry_run:
        for proj_name, accesses in plan.items():
            for ds_name in accesses:
                ds_dir = keep.tree.base / proj_name / ds_name
                if ds_dir.is_dir():
                    mode = ds_dir.stat().st_mode
                    if not mode & stat.S_ISVTX:
                        os.chmod(ds_dir, stat.S_IMODE(mode) | stat.S_ISVTX)
    return report


def _dataset_acls(ds_dir: Path, access: _Access, service: str) -> Iterator[tuple[Path, list[str]]]:
    folders = {n: _rwx(lvl, folder=True) for n, lvl in access.levels.items() if lvl}
    other_dir = "r-x" if access.public else "---"
    defaults = dict(folders)
    if service != "root":  # labkeep must read what people write, to save it
        defaults.setdefault(service, "rwx")
    yield ds_dir, _acl("rwx", folders, other_dir, default_for=defaults, default_other=other_dir)
    private = ds_dir / PRIVATE_DIR
    if private.is_dir():
        yield private, _acl("rwx", {}, "---")
    for folder, dirs, files in os.walk(ds_dir):
        here = Path(folder)
        if here == ds_dir:
            dirs[:] = [d for d in dirs if d not in (RAW, PRIVATE_DIR)]
        for d in dirs:
            yield (
                here / d,
                _acl("rwx", folders, other_dir, default_for=defaults, default_other=other_dir),
            )
        for name in files:
            path = here / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            executable = bool(st.st_mode & stat.S_IXUSR)
            labkeeps = here == ds_dir  # MANIFEST.sha256 and other files of labkeep's
            named = {
                n: _rwx(
                    min(lvl, Permission.READ) if labkeeps else lvl,
                    folder=False,
                    executable=executable,
                )
                for n, lvl in access.levels.items()
                if lvl
            }
            owner = "rwx" if executable else "rw-"
            other = ("r-x" if executable else "r--") if access.public else "---"
            yield path, _acl(owner, named, other)


def _current_named(path: Path) -> dict[str, str]:
    current = _getfacl([path]).get(path, [])
    return {
        line.split(":")[1]: line.split(":")[2]
        for line in current
        if line.startswith("user:") and line.split(":")[1]
    }


def _getfacl(paths: list[Path]) -> dict[Path, list[str]]:
    out: dict[Path, list[str]] = {}
    for i in range(0, len(paths), BATCH):
        chunk = paths[i : i + BATCH]
        done = subprocess.run(
            ["getfacl", "-p", "-E", "--", *map(str, chunk)],
            capture_output=True,
            text=True,
            check=False,
        )
        current: Path | None = None
        for line in done.stdout.splitlines():
            if line.startswith("# file: "):
                current = Path(line[len("# file: ") :])
                out[current] = []
            elif line and not line.startswith("#") and current is not None:
                out[current].append(line.split("#", 1)[0].strip())
    return out


def _apply(wanted: dict[Path, list[str]], dry_run: bool) -> list[Path]:
    paths = list(wanted)
    current = _getfacl(paths)
    changed = [p for p in paths if sorted(current.get(p, [])) != sorted(wanted[p])]
    if dry_run or not changed:
        return changed
    text = "".join(f"# file: {p}\n" + "\n".join(wanted[p]) + "\n\n" for p in changed)
    done = subprocess.run(
        ["setfacl", "--restore=-"], input=text, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise StorageError(
            f"setfacl failed: {done.stderr.strip()[:500]}",
            hint="the tree's file system must support POSIX ACLs (ext4, xfs, tmpfs; "
            "mount option acl), and labkeep must own the tree",
        )
    return changed
