"""Password checks against an LDAP directory (a simple bind as the user), with ldap3.

ldap3 is an optional dependency (``pip install 'labkeep[ldap]'``), imported here only.
"""

from __future__ import annotations

import contextlib
import math
import ssl

from labkeep.config import LdapConfig
from labkeep.errors import ConfigError, LabkeepError


class DirectoryUnavailable(LabkeepError):
    code = "ldap-unavailable"
    exit_code = 3
    http_status = 503


def ldap_bind(config: LdapConfig, user: str, password: str) -> bool:
    """True when the directory accepts *password* for *user*."""
    if not password or not user:
        # an empty password is an "unauthenticated bind" that many servers accept
        return False
    try:
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException
        from ldap3.utils.dn import escape_rdn
    except ImportError:
        raise ConfigError(
            "LDAP is configured but the ldap3 package is missing",
            hint="pip install 'labkeep[ldap]'",
        ) from None
    dn = config.user_dn.format(user=escape_rdn(user))
    try:
        server = ldap3.Server(
            config.url.rstrip("/"),  # ldap3 takes "ldap://host/" as the host name "host/"
            connect_timeout=config.timeout,
            # ldaps:// and StartTLS: ldap3 checks no certificate unless told to
            tls=ldap3.Tls(validate=ssl.CERT_REQUIRED),
        )
    except LDAPException as exc:
        raise ConfigError(f"[ldap] url {config.url!r} is not a valid LDAP URL: {exc}") from None
    connection = ldap3.Connection(
        server,
        user=dn,
        password=password,
        # whole seconds: ldap3 packs it into SO_RCVTIMEO and fails on a float
        receive_timeout=max(1, math.ceil(config.timeout)),
    )
    try:
        if config.start_tls:
            connection.open()
            connection.start_tls()
        return bool(connection.bind())
    except LDAPBindError:
        return False
    except LDAPException as exc:
        raise DirectoryUnavailable(
            f"the LDAP directory at {config.url} cannot be reached: {exc}"
        ) from None
    finally:
        with contextlib.suppress(LDAPException):  # e.g. the socket died with a TLS failure
            connection.unbind()
        if connection.socket is not None:  # ldap3 leaves the socket of a failed connect open
            connection.socket.close()
