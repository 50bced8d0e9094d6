"""The broker as deploy/install.sh installs it — listeners, password file, ACL, TLS certificate —
installed into a throwaway root and started from there on free loopback ports. Only ports and
paths are substituted; every other line is the shipped one."""

from __future__ import annotations

import getpass
import re
import subprocess
from pathlib import Path

from gateway.localservers import Mosquitto, free_port
from tests.harness import ROOT

INSTALL = ROOT / "deploy" / "install.sh"


def install_into(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, timeout=120
    )


def add_device_user(root: Path, user: str, password: str) -> None:
    """What the technician does per device: mosquitto_passwd on the installed password file."""
    subprocess.run(
        ["mosquitto_passwd", "-b", str(root / "etc/mosquitto/sdgw/passwd"), user, password],
        check=True,
        capture_output=True,
    )


def gateway_password(root: Path) -> str:
    return (root / "etc/sdgw/credentials/mqtt-password").read_text().strip()


class ShippedBroker(Mosquitto):
    """Mosquitto on the installed conf.d files of `install_root` (local listener on `port`, the TLS
    listener on `tls_port`, both on loopback)."""

    def __init__(self, workdir: Path, install_root: Path) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        etc = install_root / "etc" / "mosquitto"
        self.cafile = etc / "certs" / "sdgw.crt"
        shipped = (etc / "conf.d" / "sdgw.conf").read_text()
        listeners = re.findall(r"^listener .*$", shipped, re.M)
        assert listeners == ["listener 1883 127.0.0.1", "listener 8883"], listeners
        shipped = shipped.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
        shipped = shipped.replace("listener 8883", f"listener {self.tls_port} 127.0.0.1")
        shipped = shipped.replace("/etc/mosquitto/", f"{etc}/")
        self.conf_path.write_text(
            f"""# test copy of the installed broker config (ports and paths substituted)
user {getpass.getuser()}
persistence_location {self.root / "data"}/
log_dest stderr
log_type error
log_type warning
log_type notice
{(etc / "conf.d" / "sdgw-guarantees.conf").read_text()}
{shipped}
"""
        )
