#!/usr/bin/env bash
# Install cctv-sender on a Raspberry Pi (Raspberry Pi OS bookworm) as a systemd service.
#
#   sudo ./install.sh              install (or upgrade), enable, and start once configured
#   sudo ./install.sh --uninstall  stop and remove the service and the program
#   sudo ./install.sh --uninstall --purge   ... and the settings and state too
#   sudo ./install.sh --camera gate --camera yard
#                                  several cameras on one host: one instance of the template
#                                  unit cctv-sender@.service per camera, each with its own
#                                  settings (/etc/cctv-sender/cameras/<camera>.env)
#
# The program goes into a venv made with --system-site-packages, so picamera2 (and OpenCV,
# where the camera needs it) come from apt and match the system's libcamera. Only what the
# configured camera needs is installed: a Pi camera gets python3-picamera2 (without its
# recommended Qt preview), an MJPEG camera nothing more, and only webcams, RTSP cameras and
# video files get OpenCV (python3-opencv pulls in about a hundred packages).
#   --source-kind K   picamera2, mjpeg or opencv (default: from CCTV_SENDER_SOURCE in the
#                     settings file, else picamera2)
#   --print-packages  print the apt packages that would be installed, and exit
#   --camera NAME     install (or keep) the settings of camera NAME and enable
#                     cctv-sender@NAME.service instead of cctv-sender.service (repeatable)
#   --ca-file FILE    the cluster's CA certificate (the ca.crt stack/deploy made): copied to
#                     the settings directory as ca.crt; a new settings file points at it
# Other options (mostly for tests and unusual layouts):
#   --prefix DIR      program directory            (default /opt/cctv-sender)
#   --etc DIR         settings directory           (default /etc/cctv-sender)
#   --unit-dir DIR    systemd unit directory       (default /etc/systemd/system)
#   --bin-dir DIR     where the cctv-sender link goes (default /usr/local/bin)
#   --user NAME       service user                 (default cctv-sender)
#   --python PATH     interpreter for the venv     (default /usr/bin/python3)
#   --no-apt          do not apt-get install anything
#   --no-user         do not create the service user
#   --no-systemd      do not call systemctl (install files only)
#   --pip-opencv      pip-install opencv-python-headless instead of apt's python3-opencv
#   --wheel FILE      install this prebuilt cctv_sender wheel (offline installs)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix=/opt/cctv-sender
etc=/etc/cctv-sender
unit_dir=/etc/systemd/system
bin_dir=/usr/local/bin
user=cctv-sender
python=/usr/bin/python3
apt=1 mkuser=1 systemd=1 pip_opencv=0 uninstall=0 purge=0 wheel= source_kind= print_packages=0
cameras=()
ca_file=

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift ;;
        --etc) etc="$2"; shift ;;
        --unit-dir) unit_dir="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --user) user="$2"; shift ;;
        --python) python="$2"; shift ;;
        --no-apt) apt=0 ;;
        --no-user) mkuser=0 ;;
        --no-systemd) systemd=0 ;;
        --pip-opencv) pip_opencv=1 ;;
        --wheel) wheel="$2"; shift ;;
        --ca-file) ca_file="$2"; shift ;;
        --source-kind) source_kind="$2"; shift ;;
        --print-packages) print_packages=1 ;;
        --camera) [ -n "${2:-}" ] || die "--camera needs a camera name"; cameras+=("$2"); shift ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

# camera names as ingest accepts them (the sender's own pattern, not a copy of it)
for cam in "${cameras[@]}"; do
    PYTHONPATH="$here" "$python" -c 'import sys; from cctv_sender.wire import CAMERA_NAME_RE as r
sys.exit(0 if r.fullmatch(sys.argv[1]) else 1)' "$cam" 2>/dev/null || \
        die "--camera $cam: a camera name is letters, digits, _ . - (at most 64, see pi/README.md)"
done
case "$prefix" in ""|/|/usr|/usr/local|/etc|/var|/home) die "refusing --prefix $prefix" ;; esac
unit="$unit_dir/cctv-sender.service"
template="$unit_dir/cctv-sender@.service"
envfile="$etc/cctv-sender.env"
camera_env() { echo "$etc/cameras/$1.env"; }

# which camera library the configured source needs: picamera2, mjpeg (none) or opencv
kind_of_source() {
    local src
    src="$(sed -n 's/^[[:space:]]*CCTV_SENDER_SOURCE=//p' "$1" 2>/dev/null | tail -n 1)"
    src="${src%\"}"; src="${src#\"}"; src="${src%\'}"; src="${src#\'}"
    case "$src" in
        ""|picamera2*) echo picamera2 ;;
        http://*|https://*) echo mjpeg ;;
        *) echo opencv ;;
    esac
}
if [ -z "$source_kind" ]; then
    # every configured camera's source counts: a host with a Pi camera and a webcam needs both
    settings=("$envfile")
    [ "${#cameras[@]}" -gt 0 ] && settings=()
    for cam in "${cameras[@]}"; do settings+=("$(camera_env "$cam")"); done
    for f in "${settings[@]}"; do
        if [ -f "$f" ]; then source_kind="$source_kind $(kind_of_source "$f")"
        else source_kind="$source_kind $(kind_of_source "$here/cctv-sender.env.example")"; fi
    done
fi
pkgs="python3-venv python3-pip"
for kind in $source_kind; do
    case "$kind" in
        picamera2) pkgs="$pkgs python3-picamera2" ;;
        mjpeg) ;;
        opencv) [ "$pip_opencv" = 1 ] || pkgs="$pkgs python3-opencv python3-numpy" ;;
        *) die "--source-kind: use picamera2, mjpeg or opencv" ;;
    esac
done
pkgs="$(echo "$pkgs" | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ' | sed 's/ $//')"
if [ "$print_packages" = 1 ]; then echo "$pkgs"; exit 0; fi

if [ "$uninstall" = 1 ]; then
    if [ "$systemd" = 1 ] && command -v systemctl >/dev/null; then
        say "stopping and disabling cctv-sender.service"
        systemctl disable --now cctv-sender.service 2>/dev/null || true
        for inst in $(systemctl list-units --all --plain --no-legend 'cctv-sender@*' \
                      2>/dev/null | awk '{print $1}'); do
            say "stopping and disabling $inst"
            systemctl disable --now "$inst" 2>/dev/null || true
        done
    fi
    rm -f "$unit" "$template"
    [ "$systemd" = 1 ] && command -v systemctl >/dev/null && systemctl daemon-reload || true
    if [ -L "$bin_dir/cctv-sender" ]; then rm -f "$bin_dir/cctv-sender"; fi
    rm -rf "$prefix"
    if [ "$purge" = 1 ]; then
        say "removing settings $etc and state /var/lib/cctv-sender"
        rm -rf "$etc"
        [ "$systemd" = 1 ] && rm -rf /var/lib/cctv-sender /var/lib/private/cctv-sender
        if [ "$mkuser" = 1 ] && id "$user" >/dev/null 2>&1; then userdel "$user" || true; fi
    else
        say "kept settings in $etc and frames/sequence in /var/lib/cctv-sender (--purge removes them)"
    fi
    say "cctv-sender uninstalled"
    exit 0
fi

[ -f "$here/pyproject.toml" ] && [ -d "$here/cctv_sender" ] || die "run me from the pi/ folder of the repository"
if [ "$(id -u)" != 0 ] && { [ "$apt" = 1 ] || [ "$mkuser" = 1 ] || [ "$systemd" = 1 ]; }; then
    die "run as root: sudo $0 $*"
fi

if [ "$apt" = 1 ]; then
    say "installing system packages for a $source_kind camera: $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -qq --no-install-recommends $pkgs
fi

if [ "$mkuser" = 1 ] && ! id "$user" >/dev/null 2>&1; then
    say "creating system user $user (member of video)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --groups video "$user"
elif [ "$mkuser" = 1 ]; then
    usermod -a -G video "$user"
fi

say "creating the venv in $prefix/venv (with system site packages)"
mkdir -p "$prefix"
"$python" -m venv --system-site-packages "$prefix/venv"
pip=("$prefix/venv/bin/python" -m pip --disable-pip-version-check --no-input -q)
if [ -n "$wheel" ]; then
    "${pip[@]}" install --no-deps --force-reinstall "$wheel"
elif "$prefix/venv/bin/python" - <<'PY' 2>/dev/null
# can setuptools build a wheel here without downloading anything? (Pi OS: python3-setuptools
# with python3-wheel, which python3-pip depends on)
import importlib.util, setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
raise SystemExit(0 if v >= (70, 1) or importlib.util.find_spec("wheel") else 1)
PY
then
    "${pip[@]}" install --no-deps --no-build-isolation "$here"
else
    "${pip[@]}" install --no-deps "$here"  # fetches the build backend from PyPI
fi
if [ "$pip_opencv" = 1 ] && [ "$source_kind" = opencv ]; then
    "${pip[@]}" install "opencv-python-headless>=4.8" "numpy>=1.24"
fi
cp "$here/README.md" "$prefix/README.md"
mkdir -p "$bin_dir"
ln -sfn "$prefix/venv/bin/cctv-sender" "$bin_dir/cctv-sender"

if [ "$mkuser" = 1 ]; then
    # systemd's StateDirectory= makes it too; made here so that --check works before
    install -d -m 0750 -o "$user" -g "$user" /var/lib/cctv-sender
fi

# write_settings FILE [CAMERA]: the settings template, once (an existing file is kept)
write_settings() {
    if [ -f "$1" ]; then say "keeping existing settings $1"; return; fi
    say "writing settings template $1"
    mkdir -p "$(dirname "$1")"
    if [ -n "${2:-}" ]; then
        sed -e "s#^CCTV_SENDER_CAMERA=.*#CCTV_SENDER_CAMERA=$2#" \
            "$here/cctv-sender.env.example" > "$1.tmp"
        chmod 0640 "$1.tmp"
        mv "$1.tmp" "$1"
    else
        install -m 0640 "$here/cctv-sender.env.example" "$1"
    fi
    if [ -n "$ca_file" ]; then
        sed -i "s#^\#CCTV_SENDER_CA_FILE=.*#CCTV_SENDER_CA_FILE=$etc/ca.crt#" "$1"
    fi
    if [ "$mkuser" = 1 ]; then chgrp "$user" "$1"; fi
}
mkdir -p "$etc"
if [ -n "$ca_file" ]; then
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" 2>/dev/null \
        || die "--ca-file $ca_file is not a PEM certificate"
    say "installing the cluster's CA certificate as $etc/ca.crt"
    install -m 0644 "$ca_file" "$etc/ca.crt"
fi
if [ "${#cameras[@]}" = 0 ]; then write_settings "$envfile"; fi
for cam in "${cameras[@]}"; do write_settings "$(camera_env "$cam")" "$cam"; done

say "installing $unit"
mkdir -p "$unit_dir"
sed -e "s#^ExecStart=.*#ExecStart=$prefix/venv/bin/cctv-sender#" \
    -e "s#^EnvironmentFile=.*#EnvironmentFile=$envfile#" \
    -e "s#^User=.*#User=$user#" -e "s#^Group=.*#Group=$user#" \
    "$here/systemd/cctv-sender.service" > "$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"
# the template for hosts with several cameras: the same unit with the camera's own settings
# file; state stays in /var/lib/cctv-sender/<camera> (the sender's per-camera lock, sequence
# counter and spool)
say "installing $template"
sed -e "s#^Description=.*#Description=cctv-swarm camera sender for %i#" \
    -e "s#^EnvironmentFile=.*#EnvironmentFile=$etc/cameras/%i.env#" \
    -e "s#settings live in .*#settings live in $etc/cameras/<camera>.env.#" \
    "$unit" > "$template.tmp"
chmod 0644 "$template.tmp"
mv "$template.tmp" "$template"

# start_when_configured UNIT FILE: enable UNIT; start it once FILE has no CHANGE_ME left
start_when_configured() {
    systemctl enable "$1"
    if grep -q CHANGE_ME "$2"; then
        say "now edit $2 (camera source, https:// ingest URL and its CA or pin, token), then:"
        echo "      sudo -u $user cctv-sender --env-file $2 --check"
        echo "      sudo systemctl start $1"
    else
        systemctl restart "$1"
        say "started $1; follow it with: journalctl -u $1 -f"
    fi
}
if [ "$systemd" = 1 ]; then
    systemctl daemon-reload
    # time-sync.target only waits for a synchronised clock with this service enabled (a Pi
    # without a real-time clock boots with the time of its last shutdown)
    systemctl enable systemd-time-wait-sync.service 2>/dev/null || \
        say "systemd-time-wait-sync.service not available: frames before NTP sync are marked"
    if [ "${#cameras[@]}" = 0 ]; then
        start_when_configured cctv-sender.service "$envfile"
    fi
    for cam in "${cameras[@]}"; do
        start_when_configured "cctv-sender@$cam.service" "$(camera_env "$cam")"
    done
fi
say "cctv-sender $("$prefix/venv/bin/cctv-sender" --version | cut -d' ' -f2) installed"
