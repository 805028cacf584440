#!/bin/sh
# Entrypoint of the cctv images: load the settings file (a Docker config) into the environment,
# then run `cctv "$@"` (ingest, web, inference, status, check-config...).
#
# /etc/cctv/cctv.env holds VAR=value lines (no quotes; blank lines and # comments ignored).
# A variable already set in the environment (the stack's `environment:`) is left alone, so
# per-service settings win over the shared file.
set -eu
conf=/etc/cctv/cctv.env
if [ -r "$conf" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            '' | '#'*) continue ;;
            *=*) ;;
            *) echo "cctv-entrypoint: $conf: not a VAR=value line: $line" >&2; exit 2 ;;
        esac
        key=${line%%=*}
        val=${line#*=}
        case "$key" in
            '' | [0-9]* | *[!A-Za-z0-9_]*)
                echo "cctv-entrypoint: $conf: not a VAR=value line: $line" >&2
                exit 2 ;;
        esac
        eval "already=\${$key+set}"
        if [ -z "$already" ]; then
            export "$key=$val"
        fi
    done <"$conf"
fi
exec cctv "$@"
