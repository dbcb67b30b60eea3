"""Access control: principals, the policy (:func:`check`), secrets.

Authorization is one function, :func:`labkeep.access.check`, called by the Keep's use
cases; front ends never decide.
"""

from labkeep.access.policy import (
    ALL_ACTIONS,
    ANONYMOUS,
    SITE,
    Grant,
    Permission,
    Principal,
    Resource,
    ShareScope,
    allowed,
    can_see_project,
    check,
    permission,
)

__all__ = [
    "ALL_ACTIONS",
    "ANONYMOUS",
    "SITE",
    "Grant",
    "Permission",
    "Principal",
    "Resource",
    "ShareScope",
    "allowed",
    "can_see_project",
    "check",
    "permission",
]
