#!/bin/sh
# Install PgBouncer from Debian's packages (the tests start their own instances; the packaged
# service is left as Debian configures it). Needs root and apt-get; says so otherwise.
set -e
command -v pgbouncer >/dev/null 2>&1 && exit 0
[ -x /usr/sbin/pgbouncer ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null
else
    echo "pgbouncer not installed: run 'apt-get install -y pgbouncer' as root;" \
        "the PgBouncer tests will be skipped (they fail under CI=true)" >&2
fi
