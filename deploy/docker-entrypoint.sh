#!/bin/sh
# Entrypoint of the Ordo image: `ordo serve` migrates the database first, then serves.
#
# `ordo db upgrade` brings the database at ORDO_DATABASE_URL (by default the SQLite file in the
# /data volume) to the latest schema; on a database already at head it changes nothing. Any
# other command (`ordo worker`, `ordo admin rotate`, `sh`) runs as given, without migrating.
set -eu

if [ "$#" -ge 2 ] && [ "$1" = "ordo" ] && [ "$2" = "serve" ]; then
    ordo db upgrade
fi
exec "$@"
