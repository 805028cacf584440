#!/usr/bin/env bash
# Remove cctv-sender: sudo ./uninstall.sh [--purge]  (--purge also removes settings and state)
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/install.sh" --uninstall "$@"
