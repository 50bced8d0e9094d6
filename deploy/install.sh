#!/usr/bin/env bash
# Install (or update) the Smart District Gateway on a Raspberry Pi OS bookworm machine, as root:
#
#   deploy/install.sh [--dry-run] [--root DIR] [--debian-packages]
#                     [--district-broker HOST:PORT --gateway-id ID --bridge-password-file FILE
#                      --bridge-ca FILE]
#
# Idempotent: a second run changes nothing and says "unchanged" / "kept". What it does:
#   packages   Mosquitto (>= 2.0.18, from the Mosquitto project's repository: decisions.md D4) and
#              InfluxDB 1.8 (InfluxData's repository, D16), python3-venv, curl, openssl;
#              --debian-packages takes Debian's own (Mosquitto 2.0.11, InfluxDB 1.6.7) instead
#   user       system user and group `sdgw`, member of `dialout` (the serial readers)
#   venv       /opt/sdgw/venv with this checkout installed (`sdgw` at /opt/sdgw/venv/bin/sdgw)
#   config     /etc/sdgw/gateway.toml from the example (never overwritten), secrets in
#              /etc/sdgw/credentials (root only; systemd hands them to the service)
#   state      /var/lib/sdgw (the durable log), owned by sdgw
#   broker     /etc/mosquitto/conf.d/sdgw*.conf, ACL and password file, the gateway's MQTT user
#              with a generated password, a self-signed TLS certificate when none is there, and
#              the bridge to the district broker when --district-broker is given
#   influxdb   /etc/influxdb/influxdb.conf, the database with its retention policy
#   udev       /etc/udev/rules.d/99-sdgw-serial.rules, /usr/local/sbin/sdgw-name-port
#   systemd    /etc/systemd/system/sdgw.service, enabled (start it once gateway.toml is edited)
#
# --dry-run  prints every action and changes nothing.
# --root DIR installs the files under DIR instead of / (tests, image builds): packages, the user,
#            the venv and every systemctl/udevadm call are skipped and said so.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
root=""
dry_run=0
vendor_repos=1
district_broker=""
gateway_id=""
bridge_password_file=""
bridge_ca=""

usage() { sed -n '2,27p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --debian-packages) vendor_repos=0; shift ;;
    --district-broker) district_broker=${2:?}; shift 2 ;;
    --gateway-id) gateway_id=${2:?}; shift 2 ;;
    --bridge-password-file) bridge_password_file=${2:?}; shift 2 ;;
    --bridge-ca) bridge_ca=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "$root" ]; then
  [ -d "$root" ] || { echo "install.sh: --root $root is not a directory" >&2; exit 2; }
  root=$(cd "$root" && pwd)
elif [ "$(id -u)" -ne 0 ] && [ "$dry_run" -eq 0 ]; then
  echo "install.sh: run as root (or with --dry-run, or --root DIR)" >&2
  exit 2
fi
if [ -n "$district_broker" ]; then
  if [ -z "$gateway_id" ] || [ -z "$bridge_password_file" ] || [ -z "$bridge_ca" ]; then
    echo "install.sh: --district-broker needs --gateway-id, --bridge-password-file and --bridge-ca" >&2
    exit 2
  fi
  case "$district_broker" in
    *[!A-Za-z0-9.:-]*|*:|:*) echo "install.sh: --district-broker must be HOST:PORT" >&2; exit 2 ;;
  esac
  case "$gateway_id" in
    ""|*[!A-Za-z0-9_.-]*) echo "install.sh: --gateway-id must be letters, digits, _ . -" >&2; exit 2 ;;
  esac
  [ -r "$bridge_password_file" ] || { echo "install.sh: cannot read $bridge_password_file" >&2; exit 2; }
  [ -r "$bridge_ca" ] || { echo "install.sh: cannot read $bridge_ca" >&2; exit 2; }
fi

say() { printf 'install: %s\n' "$*"; }

# A command that changes the machine: printed in a dry run, skipped under --root.
system() {
  if [ -n "$root" ]; then
    say "skipped (--root): $*"
  elif [ "$dry_run" -eq 1 ]; then
    say "would run: $*"
  else
    "$@"
  fi
}

owner_of() {
  # chown only on the real machine: under --root the users may not exist
  [ -z "$root" ] && [ "$dry_run" -eq 0 ] && chown "$1" "$2"
  return 0
}

ensure_dir() { # DIR MODE OWNER
  local dir=$root$1
  if [ -d "$dir" ] && [ "$(stat -c %a "$dir")" = "$2" ]; then
    return 0
  fi
  if [ "$dry_run" -eq 1 ]; then
    say "would create $1 (mode $2, $3)"
    return 0
  fi
  install -d -m "$2" "$dir"
  owner_of "$3" "$dir"
  say "directory $1"
}

# FILE DEST MODE OWNER: ours, replaced when it differs.
install_file() {
  local from=$1 dest=$root$2
  if [ -f "$dest" ] && cmp -s "$from" "$dest"; then
    if [ "$(stat -c %a "$dest")" != "$3" ]; then
      if [ "$dry_run" -eq 1 ]; then say "would set mode $3 on $2"; else chmod "$3" "$dest"; say "mode $3 on $2"; fi
    else
      say "unchanged $2"
    fi
    return 0
  fi
  if [ "$dry_run" -eq 1 ]; then
    say "would install $2"
    return 0
  fi
  install -D -m "$3" "$from" "$dest"
  owner_of "$4" "$dest"
  say "installed $2"
  mark_changed "$2"
}

# Services are restarted only when a file of theirs changed.
broker_changed=0
influxdb_changed=0
mark_changed() {
  case "$1" in
    /etc/mosquitto/*) broker_changed=1 ;;
    /etc/influxdb/*) influxdb_changed=1 ;;
  esac
}

# FILE DEST MODE OWNER: the technician's after the first install, never overwritten.
install_once() {
  if [ -e "$root$2" ]; then
    say "kept $2 (local changes are preserved)"
    return 0
  fi
  install_file "$@"
}

# TEXT DEST MODE OWNER: like install_file, from a string.
install_text() {
  local tmp
  tmp=$(mktemp)
  printf '%s\n' "$1" >"$tmp"
  install_file "$tmp" "$2" "$3" "$4"
  rm -f "$tmp"
}

# ---- packages
if [ "$vendor_repos" -eq 1 ]; then
  install_text "deb [signed-by=/etc/apt/keyrings/mosquitto.asc] https://repo.mosquitto.org/debian bookworm main" \
    /etc/apt/sources.list.d/mosquitto.list 644 root:root
  install_text "deb [signed-by=/etc/apt/keyrings/influxdata.asc] https://repos.influxdata.com/debian stable main" \
    /etc/apt/sources.list.d/influxdata.list 644 root:root
  if [ ! -s "$root/etc/apt/keyrings/mosquitto.asc" ]; then
    system install -d -m 755 /etc/apt/keyrings
    system curl -fsSL -o /etc/apt/keyrings/mosquitto.asc https://repo.mosquitto.org/debian/mosquitto-repo.gpg.key
    system curl -fsSL -o /etc/apt/keyrings/influxdata.asc https://repos.influxdata.com/influxdata-archive.key
  fi
fi
packages=(python3-venv python3-pip mosquitto mosquitto-clients influxdb curl openssl ca-certificates)
system env DEBIAN_FRONTEND=noninteractive apt-get update -q
system env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"

# ---- user
if [ -z "$root" ] && getent passwd sdgw >/dev/null; then
  say "unchanged user sdgw"
else
  system useradd --system --user-group --home-dir /var/lib/sdgw --no-create-home --shell /usr/sbin/nologin sdgw
fi
if [ -z "$root" ] && id -nG sdgw 2>/dev/null | grep -qw dialout; then
  say "unchanged: sdgw is in dialout"
else
  system usermod -aG dialout sdgw
fi

# ---- directories
ensure_dir /opt/sdgw 755 root:root
ensure_dir /etc/sdgw 750 root:sdgw
ensure_dir /etc/sdgw/credentials 700 root:root
ensure_dir /var/lib/sdgw 750 sdgw:sdgw
ensure_dir /etc/mosquitto/conf.d 755 root:root
ensure_dir /etc/mosquitto/sdgw 750 root:mosquitto
ensure_dir /etc/mosquitto/certs 750 root:mosquitto

# ---- the gateway: venv, config, unit
if [ -x "$root/opt/sdgw/venv/bin/python" ]; then
  say "kept /opt/sdgw/venv"
else
  system python3 -m venv /opt/sdgw/venv
fi
system /opt/sdgw/venv/bin/python -m pip install -q --upgrade "$src"
install_file "$src/README.md" /opt/sdgw/README.md 644 root:root
install_once "$src/deploy/gateway.example.toml" /etc/sdgw/gateway.toml 640 root:sdgw
install_file "$src/deploy/systemd/sdgw.service" /etc/systemd/system/sdgw.service 644 root:root

# ---- broker: config, ACL, the gateway's user, TLS
install_file "$src/deploy/mosquitto/sdgw-guarantees.conf" /etc/mosquitto/conf.d/sdgw-guarantees.conf 644 root:root
install_file "$src/deploy/mosquitto/sdgw.conf" /etc/mosquitto/conf.d/sdgw.conf 644 root:root
install_once "$src/deploy/mosquitto/acl" /etc/mosquitto/sdgw/acl 640 root:mosquitto

credential=$root/etc/sdgw/credentials/mqtt-password
passwd_file=$root/etc/mosquitto/sdgw/passwd
if [ -s "$credential" ] && [ -f "$passwd_file" ] && grep -q '^sdgw:' "$passwd_file"; then
  say "kept the gateway's MQTT user sdgw and its credential"
elif [ "$dry_run" -eq 1 ]; then
  say "would create the MQTT user sdgw with a generated password (credential mqtt-password)"
else
  if [ ! -s "$credential" ]; then
    (umask 077 && openssl rand -hex 24 >"$credential")
  fi
  plain=$(mktemp)
  chmod 600 "$plain"
  printf 'sdgw:%s\n' "$(cat "$credential")" >"$plain"
  mosquitto_passwd -U "$plain" # hashes in place: the password never appears on a command line
  touch "$passwd_file"
  chmod 640 "$passwd_file"
  grep -v '^sdgw:' "$passwd_file" >"$plain.keep" || true
  cat "$plain.keep" "$plain" >"$passwd_file"
  rm -f "$plain" "$plain.keep"
  owner_of root:mosquitto "$passwd_file"
  say "MQTT user sdgw created; its password is /etc/sdgw/credentials/mqtt-password"
  broker_changed=1
fi

cert=$root/etc/mosquitto/certs/sdgw.crt
key=$root/etc/mosquitto/certs/sdgw.key
if [ -s "$cert" ] && [ -s "$key" ]; then
  say "kept the broker's TLS certificate"
elif [ "$dry_run" -eq 1 ]; then
  say "would make a self-signed TLS certificate for the broker (10 years, ECDSA P-256)"
else
  host=$(hostname)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=$host" -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
    -keyout "$key" -out "$cert" 2>/dev/null
  chmod 640 "$key"
  chmod 644 "$cert"
  owner_of root:mosquitto "$key"
  say "self-signed TLS certificate /etc/mosquitto/certs/sdgw.crt (give it to devices as their CA)"
  broker_changed=1
fi

if [ -n "$district_broker" ]; then
  install_file "$bridge_ca" /etc/mosquitto/certs/district-ca.crt 644 root:root
  bridge=$(sed -e "s|@BROKER@|$district_broker|" -e "s|@GATEWAY@|$gateway_id|g" \
    -e "s|@CAFILE@|/etc/mosquitto/certs/district-ca.crt|" "$src/deploy/mosquitto/sdgw-bridge.conf.in")
  password=$(head -n1 "$bridge_password_file")
  install_text "${bridge//@PASSWORD@/"$password"}" /etc/mosquitto/conf.d/sdgw-bridge.conf 640 root:mosquitto
fi

# ---- InfluxDB
if [ -f "$root/etc/influxdb/influxdb.conf" ] && [ ! -e "$root/etc/influxdb/influxdb.conf.dist" ] \
  && ! cmp -s "$root/etc/influxdb/influxdb.conf" "$src/deploy/influxdb/influxdb.conf"; then
  if [ "$dry_run" -eq 1 ]; then
    say "would keep the package's influxdb.conf as influxdb.conf.dist"
  else
    cp -p "$root/etc/influxdb/influxdb.conf" "$root/etc/influxdb/influxdb.conf.dist"
    say "the package's influxdb.conf kept as influxdb.conf.dist"
  fi
fi
install_file "$src/deploy/influxdb/influxdb.conf" /etc/influxdb/influxdb.conf 644 root:root
install_file "$src/deploy/influxdb/retention.sh" /usr/local/sbin/sdgw-influx-retention 755 root:root

# ---- udev
install_once "$src/deploy/udev/99-sdgw-serial.rules" /etc/udev/rules.d/99-sdgw-serial.rules 644 root:root
install_file "$src/deploy/udev/sdgw-name-port.sh" /usr/local/sbin/sdgw-name-port 755 root:root

# ---- services
system udevadm control --reload-rules
system udevadm trigger --subsystem-match=tty
system systemctl daemon-reload
system systemctl enable --now influxdb.service
if [ "$influxdb_changed" -eq 1 ]; then
  system systemctl restart influxdb.service
fi
if [ "$broker_changed" -eq 1 ]; then
  system systemctl restart mosquitto.service
else
  say "unchanged: Mosquitto's files (not restarted)"
fi
system /usr/local/sbin/sdgw-influx-retention --database sdgw --days 30
system systemctl enable sdgw.service

say "done. Next: edit /etc/sdgw/gateway.toml, put secrets in /etc/sdgw/credentials,"
say "      run /opt/sdgw/venv/bin/sdgw doctor -c /etc/sdgw/gateway.toml, then systemctl start sdgw"
