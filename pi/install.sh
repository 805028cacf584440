#!/usr/bin/env bash
# Install cctv-sender on a Raspberry Pi (Raspberry Pi OS bookworm) as a systemd service.
#
#   sudo ./install.sh              install (or upgrade), enable, and start once configured
#   sudo ./install.sh --uninstall  stop and remove the service and the program
#   sudo ./install.sh --uninstall --purge   ... and the settings and state too
#
# The program goes into a venv made with --system-site-packages, so picamera2 (and OpenCV,
# where the camera needs it) come from apt and match the system's libcamera. Only what the
# configured camera needs is installed: a Pi camera gets python3-picamera2 (without its
# recommended Qt preview), an MJPEG camera nothing more, and only webcams, RTSP cameras and
# video files get OpenCV (python3-opencv pulls in about a hundred packages).
#   --source-kind K   picamera2, mjpeg or opencv (default: from CCTV_SENDER_SOURCE in the
#                     settings file, else picamera2)
#   --print-packages  print the apt packages that would be installed, and exit
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
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

case "$prefix" in ""|/|/usr|/usr/local|/etc|/var|/home) die "refusing --prefix $prefix" ;; esac
unit="$unit_dir/cctv-sender.service"
envfile="$etc/cctv-sender.env"

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
    if [ -f "$envfile" ]; then source_kind="$(kind_of_source "$envfile")"
    else source_kind="$(kind_of_source "$here/cctv-sender.env.example")"; fi
fi
case "$source_kind" in picamera2|mjpeg|opencv) ;; *) die "--source-kind: use picamera2, mjpeg or opencv" ;; esac
pkgs="python3-venv python3-pip"
case "$source_kind" in
    picamera2) pkgs="$pkgs python3-picamera2" ;;
    opencv) [ "$pip_opencv" = 1 ] || pkgs="$pkgs python3-opencv python3-numpy" ;;
esac
if [ "$print_packages" = 1 ]; then echo "$pkgs"; exit 0; fi

if [ "$uninstall" = 1 ]; then
    if [ "$systemd" = 1 ] && command -v systemctl >/dev/null; then
        say "stopping and disabling cctv-sender.service"
        systemctl disable --now cctv-sender.service 2>/dev/null || true
    fi
    rm -f "$unit"
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

mkdir -p "$etc"
if [ -n "$ca_file" ]; then
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" 2>/dev/null \
        || die "--ca-file $ca_file is not a PEM certificate"
    say "installing the cluster's CA certificate as $etc/ca.crt"
    install -m 0644 "$ca_file" "$etc/ca.crt"
fi
if [ ! -f "$envfile" ]; then
    say "writing settings template $envfile"
    install -m 0640 "$here/cctv-sender.env.example" "$envfile"
    if [ -n "$ca_file" ]; then
        sed -i "s#^\#CCTV_SENDER_CA_FILE=.*#CCTV_SENDER_CA_FILE=$etc/ca.crt#" "$envfile"
    fi
    if [ "$mkuser" = 1 ]; then chgrp "$user" "$envfile"; fi
else
    say "keeping existing settings $envfile"
fi

say "installing $unit"
mkdir -p "$unit_dir"
sed -e "s#^ExecStart=.*#ExecStart=$prefix/venv/bin/cctv-sender#" \
    -e "s#^EnvironmentFile=.*#EnvironmentFile=$envfile#" \
    -e "s#^User=.*#User=$user#" -e "s#^Group=.*#Group=$user#" \
    "$here/systemd/cctv-sender.service" > "$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"

if [ "$systemd" = 1 ]; then
    systemctl daemon-reload
    # time-sync.target only waits for a synchronised clock with this service enabled (a Pi
    # without a real-time clock boots with the time of its last shutdown)
    systemctl enable systemd-time-wait-sync.service 2>/dev/null || \
        say "systemd-time-wait-sync.service not available: frames before NTP sync are marked"
    systemctl enable cctv-sender.service
    if grep -q CHANGE_ME "$envfile"; then
        say "now edit $envfile (camera, https:// ingest URL and its CA or pin, name, token), then:"
        echo "      sudo -u $user cctv-sender --env-file $envfile --check"
        echo "      sudo systemctl start cctv-sender"
    else
        systemctl restart cctv-sender.service
        say "started; follow it with: journalctl -u cctv-sender -f"
    fi
fi
say "cctv-sender $("$prefix/venv/bin/cctv-sender" --version | cut -d' ' -f2) installed"
