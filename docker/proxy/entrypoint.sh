#!/bin/sh
# Entrypoint of the proxy image: render /etc/nginx-cctv/nginx.conf.template into
# /tmp/nginx/nginx.conf and run nginx in the foreground (as the non-root cctv user).
#
# From the shared settings file /etc/cctv/cctv.env (the stack's Docker config) or the
# environment (which wins), like the cctv services:
#   CCTV_MAX_FRAME_BYTES         client_max_body_size of ingest (default 2097152)
#   CCTV_PROXY_CLIENT_TIMEOUT_S  client header/body timeout in seconds (default 10)
# Container-only (not cctv settings):
#   PROXY_INGEST_UPSTREAM  host:port of ingest (default ingest:8080)
#   PROXY_WEB_UPSTREAM     host:port of web (default web:8000)
#   PROXY_RESOLVER         DNS server for the upstream names (default 127.0.0.11, Docker's)
#   PROXY_TLS              on (default): both ports speak TLS only; off: plain HTTP
#   PROXY_TLS_CERT         PEM certificate chain (default /run/secrets/cctv_tls_cert)
#   PROXY_TLS_KEY          PEM private key       (default /run/secrets/cctv_tls_key)
# The health check URL (https or http) is written to /tmp/nginx/health-url.
set -eu
conf=/etc/cctv/cctv.env
template=/etc/nginx-cctv/nginx.conf.template
run=/tmp/nginx

setting() {  # setting NAME DEFAULT: the environment, else the settings file, else DEFAULT
    eval "value=\${$1:-}"
    if [ -z "$value" ] && [ -r "$conf" ]; then
        value=$(sed -n "s/^$1=//p" "$conf" | tail -n 1)
    fi
    echo "${value:-$2}"
}

digits() {  # digits NAME VALUE: refuse anything but a positive integer
    case "$2" in
        '' | *[!0-9]*) echo "cctv-proxy: $1=$2 must be a positive integer" >&2; exit 2 ;;
    esac
}

max_body=$(setting CCTV_MAX_FRAME_BYTES 2097152)
digits CCTV_MAX_FRAME_BYTES "$max_body"
timeout=$(setting CCTV_PROXY_CLIENT_TIMEOUT_S 10)
timeout=${timeout%%.*}
digits CCTV_PROXY_CLIENT_TIMEOUT_S "$timeout"
[ "$timeout" -ge 1 ] || timeout=1
ingest=${PROXY_INGEST_UPSTREAM:-ingest:8080}
web=${PROXY_WEB_UPSTREAM:-web:8000}
resolver=${PROXY_RESOLVER:-127.0.0.11}
tls_cert=${PROXY_TLS_CERT:-/run/secrets/cctv_tls_cert}
tls_key=${PROXY_TLS_KEY:-/run/secrets/cctv_tls_key}
case "${PROXY_TLS:-on}" in
    on | true | 1)
        for f in "$tls_cert" "$tls_key"; do
            [ -r "$f" ] || { echo "cctv-proxy: TLS is on but $f is not readable (create the secrets with stack/deploy, or set PROXY_TLS=off)" >&2; exit 2; }
            case "$f" in *[!A-Za-z0-9_./-]*) echo "cctv-proxy: TLS file name $f: letters, digits and _./- only" >&2; exit 2 ;; esac
        done
        listen_tls=ssl scheme=https
        tls_certificate="ssl_certificate $tls_cert; ssl_certificate_key $tls_key;" ;;
    off | false | 0)
        echo "cctv-proxy: WARNING: PROXY_TLS=off: tokens, passwords and cookies cross the network in clear" >&2
        listen_tls="" scheme=http tls_certificate="" ;;
    *) echo "cctv-proxy: PROXY_TLS=${PROXY_TLS} must be on or off" >&2; exit 2 ;;
esac

mkdir -p "$run/temp"
sed -e "s|@WORKERS@|auto|" -e "s|@PID_FILE@|$run/nginx.pid|" -e "s|@ERROR_LOG@|/dev/stderr|" \
    -e "s|@TEMP_DIR@|$run/temp|" -e "s|@RESOLVER@|resolver $resolver valid=2s ipv6=off;|" \
    -e "s|@CLIENT_TIMEOUT_S@|$timeout|" -e "s|@SEND_TIMEOUT_S@|30|" \
    -e "s|@INGEST_LISTEN@|8080|" -e "s|@INGEST_UPSTREAM@|$ingest|" \
    -e "s|@WEB_LISTEN@|8000|" -e "s|@WEB_UPSTREAM@|$web|" \
    -e "s|@MAX_BODY_BYTES@|$max_body|" -e "s|@LISTEN_TLS@|$listen_tls|" \
    -e "s|@TLS_CERTIFICATE@|$tls_certificate|" "$template" >"$run/nginx.conf"
if grep -q '@[A-Z_]*@' "$run/nginx.conf"; then
    echo "cctv-proxy: placeholders left in $run/nginx.conf:" >&2
    grep -o '@[A-Z_]*@' "$run/nginx.conf" | sort -u >&2
    exit 2
fi
echo "$scheme://127.0.0.1:8080/proxy-healthz" >"$run/health-url"
nginx -t -q -e /dev/stderr -c "$run/nginx.conf"
exec nginx -e /dev/stderr -c "$run/nginx.conf" -g 'daemon off;'
