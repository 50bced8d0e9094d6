#!/usr/bin/env bash
# Print the udev rule that names one serial reader /dev/sdgw/<name> by its USB serial number
# (installed as /usr/local/sbin/sdgw-name-port):
#   sdgw-name-port --name NAME --device /dev/ttyUSB0      (reads the serial with udevadm)
#   sdgw-name-port --name NAME --serial A10K5XJ2          (serial known, e.g. from lsusb -v)
#   sdgw-name-port --name NAME --path ID_PATH             (adapters without a serial number)
# Append the output to /etc/udev/rules.d/99-sdgw-serial.rules, then reload udev.
set -euo pipefail

name="" device="" serial="" id_path=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --path) id_path=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "sdgw-name-port: unknown argument $1" >&2; exit 2 ;;
  esac
done

# A name becomes a path under /dev/sdgw: no slash, no quote, no glob character.
case "$name" in
  ""|*[!A-Za-z0-9_.-]*|.*) echo "sdgw-name-port: --name must be letters, digits, _ . - (e.g. door-cards)" >&2; exit 2 ;;
esac

if [ -n "$device" ]; then
  [ -e "$device" ] || { echo "sdgw-name-port: $device does not exist (plugged in?)" >&2; exit 1; }
  props=$(udevadm info --query=property --name="$device")
  serial=$(printf '%s\n' "$props" | sed -n 's/^ID_SERIAL_SHORT=//p')
  if [ -z "$serial" ]; then
    id_path=$(printf '%s\n' "$props" | sed -n 's/^ID_PATH=//p')
    echo "sdgw-name-port: $device has no USB serial number; naming it by its USB port instead" >&2
  fi
fi

# udev match values are glob patterns inside double quotes: refuse what would change their meaning.
for value in "$serial" "$id_path"; do
  case "$value" in
    *'"'*|*'*'*|*'?'*|*'['*|*\\*) echo "sdgw-name-port: refusing a value with quote or glob characters: $value" >&2; exit 2 ;;
  esac
done

if [ -n "$serial" ]; then
  match="ENV{ID_BUS}==\"usb\", ENV{ID_SERIAL_SHORT}==\"$serial\""
elif [ -n "$id_path" ]; then
  match="ENV{ID_PATH}==\"$id_path\""
else
  echo "sdgw-name-port: give --device, --serial or --path" >&2
  exit 2
fi
printf 'SUBSYSTEM=="tty", %s, SYMLINK+="sdgw/%s", GROUP="dialout", MODE="0660"\n' "$match" "$name"
