"""The web server: HTML pages for people, JSON under /api/v1 for programs.

FastAPI and Jinja2 are imported only here, so the CLI stays light.
"""

from labkeep.web.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
