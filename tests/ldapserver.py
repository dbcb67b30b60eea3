"""A throwaway OpenLDAP server for the tests: slapd with an mdb database in a temp folder.

The database is loaded offline with slapadd, then slapd runs in the foreground (``-d 0``)
on its own ports, so the tests own its process. When we are root, slapd drops to
``nobody`` (``-u``/``-g``) after reading its config, and the folder is made theirs.
Debian's packages: slapd and ldap-utils (./dev test installs them as root).

With ``openssl`` at hand the server also speaks TLS, with a self-signed certificate for
the IP address 127.0.0.1 only (``ca_file``): StartTLS on ``url``, ``ldaps://`` on
``ldaps_url``, and the same listener on 127.0.0.2 (``other_name_url``), whose name the
certificate does not hold.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
#: the [ldap] user_dn for this directory
USER_DN = f"uid={{user}},{PEOPLE}"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-for-seeding"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/openldap", "/usr/lib64/openldap")


class LdapServerUnavailable(RuntimeError):
    """slapd is not installed or would not start here: the reason, for pytest.skip."""


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise LdapServerUnavailable(
            f"OpenLDAP's {name} was not found: install it with "
            "'apt-get install slapd ldap-utils' (./dev test does this when run as root)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword value (what slappasswd makes)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # the {SSHA} scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class LdapServer:
    def __init__(self, people: dict[str, str]) -> None:
        """*people*: uid -> password of the entries under ou=people."""
        self.people = dict(people)
        self.dir = Path(tempfile.mkdtemp(prefix="labkeep-ldap-"))
        self.port = 0
        self.ldaps_port = 0
        #: the certificate (its own CA), None when openssl is missing
        self.ca_file: Path | None = None
        #: why there is no TLS, when there is none
        self.no_tls_reason = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def other_name_url(self) -> str:
        return f"ldap://127.0.0.2:{self.port}"

    def dn(self, uid: str) -> str:
        return USER_DN.format(user=uid)

    # -- setup -----------------------------------------------------------------------
    def _config(self) -> str:
        modules = next((d for d in MODULE_DIRS if Path(d, "back_mdb.la").exists()), None)
        schemas = [SCHEMA_DIR / f"{n}.schema" for n in ("core", "cosine", "inetorgperson")]
        missing = [str(s) for s in schemas if not s.exists()]
        if missing:
            raise LdapServerUnavailable(f"OpenLDAP schema files missing: {', '.join(missing)}")
        tls = []
        if self.ca_file is not None:
            tls = [
                f"TLSCertificateFile {self.ca_file}",
                f"TLSCertificateKeyFile {self.dir / 'key.pem'}",
            ]
        lines = [
            *tls,
            # like Active Directory and many servers out there, accept an "unauthenticated
            # bind" (a DN with an empty password) as anonymous: labkeep must refuse it
            "allow bind_anon_dn",
            *(f"include {s}" for s in schemas),
            f"pidfile {self.dir / 'slapd.pid'}",
            f"argsfile {self.dir / 'slapd.args'}",
            *([f"modulepath {modules}", "moduleload back_mdb"] if modules else []),
            "database mdb",
            "maxsize 16777216",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f"rootpw {ssha(ROOT_PASSWORD)}",
            f"directory {self.dir / 'db'}",
            "",
        ]
        return "\n".join(lines)

    def _seed(self) -> str:
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\n"
            "dc: example\n",
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        ]
        for uid, password in self.people.items():
            entries.append(
                f"dn: {self.dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                f"cn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {ssha(password)}\n"
            )
        return "\n".join(entries)

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            self.no_tls_reason = "openssl was not found (apt-get install openssl)"
            return
        made = subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=labkeep test directory", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem"),
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if made.returncode:
            self.no_tls_reason = f"openssl req failed: {made.stderr.strip()[-500:]}"
            return
        self.ca_file = self.dir / "cert.pem"

    def start(self) -> None:
        slapd, slapadd = _bin("slapd"), _bin("slapadd")
        self._make_certificate()
        conf = self.dir / "slapd.conf"
        conf.write_text(self._config(), encoding="utf-8")
        (self.dir / "seed.ldif").write_text(self._seed(), encoding="utf-8")
        (self.dir / "db").mkdir()
        add = subprocess.run(
            [slapadd, "-f", str(conf), "-l", str(self.dir / "seed.ldif")],
            capture_output=True,
            text=True,
        )
        if add.returncode:
            raise LdapServerUnavailable(f"slapadd failed: {add.stderr.strip()[-800:]}")
        user_args: list[str] = []
        if self._as_root:
            # slapd may run as root, but need not: it drops to nobody after reading its
            # config and opening its port, so the database folder must be nobody's
            account = pwd.getpwnam("nobody")
            group = grp.getgrgid(account.pw_gid).gr_name
            for folder, _dirs, files in os.walk(self.dir):
                os.chown(folder, account.pw_uid, account.pw_gid)
                for name in files:
                    os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)
            user_args = ["-u", "nobody", "-g", group]
        for _attempt in range(3):  # another process may take the free port first
            self.port = _free_port()
            urls = [f"{self.url}/", f"{self.other_name_url}/"]
            if self.ca_file is not None:
                self.ldaps_port = _free_port()
                urls.append(f"{self.ldaps_url}/")
            log = self.dir / "slapd.log"
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    [slapd, "-d", "0", "-h", " ".join(urls), "-f", str(conf), *user_args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                )
            if self._wait_ready():
                return
            text = log.read_text(errors="replace")
            self.stop(remove=False)
            if "Address already in use" not in text:
                raise LdapServerUnavailable(f"slapd did not start: {text.strip()[-800:]}")
        raise LdapServerUnavailable("slapd did not start: no free port on 127.0.0.1")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        """True once slapd answers a bind as its rootdn; False when it exits."""
        whoami = _bin("ldapwhoami")
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            probe = subprocess.run(
                [whoami, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def whoami(self, dn: str, password: str) -> str | None:
        """What the server says a simple bind as *dn* is (None when it refuses it)."""
        probe = subprocess.run(
            [_bin("ldapwhoami"), "-x", "-H", self.url, "-D", dn, "-w", password],
            capture_output=True,
            text=True,
        )
        return probe.stdout.strip() if probe.returncode == 0 else None

    def stop(self, *, remove: bool = True) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if remove:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.dir)
