#!/bin/sh
# The labkeep containers' entry point (and the smoke test's, tests/test_deploy.py):
# creates the keep on first start, then runs the service's command.
set -eu
: "${LABKEEP_ROOT:?set LABKEEP_ROOT (the keep's folder)}"
if [ ! -f "$LABKEEP_ROOT/labkeep.toml" ]; then
    : "${LABKEEP_CATALOG_URL:?set LABKEEP_CATALOG_URL (postgresql+psycopg://...)}"
    labkeep init "$LABKEEP_ROOT" --catalog "$LABKEEP_CATALOG_URL" --admin "${LABKEEP_ADMIN:-admin}"
fi
exec "$@"
