"""Doctor: the MQTT broker — reachable (TCP, TLS when configured), our credentials accepted
(CONNACK), and the ACL lets us subscribe to every device topic (the SUBACK's reason codes).

A one-shot MQTT 5 exchange with the gateway's own codec (`mqtt5`, decisions.md D3) on asyncio
streams. It uses its own client id and a clean session that expires at once: the gateway's
persistent session (and the messages queued in it) is never touched. Retained messages are not
requested (Retain Handling 2), nothing is published: the retained status topic stays as it is.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import mqtt5

from gateway.config import ConfigError, GatewayConfig, read_secret
from gateway.doctor.mosquitto_acl import readable
from gateway.doctor.report import Check, failed, passed, secret_fix, skipped
from gateway.pipeline import TopicRouter
from gateway.runtime import tls_context

TIMEOUT_S = 5.0
DEFAULT_ACL_FILE = Path("/etc/mosquitto/sdgw/acl")  # where install.sh puts it


async def _read_packet(reader: asyncio.StreamReader) -> mqtt5.Packet:
    head = await reader.readexactly(2)
    data = bytearray(head)
    length, shift, byte = 0, 0, head[1]
    while True:
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 21:
            raise ValueError("malformed remaining length")
        byte = (await reader.readexactly(1))[0]
        data.append(byte)
    data += await reader.readexactly(length)
    return mqtt5.read(bytes(data))[0]


async def _until(reader: asyncio.StreamReader, kind: type) -> mqtt5.Packet:
    while True:
        packet = await _read_packet(reader)
        if isinstance(packet, kind):
            return packet  # anything else (a live PUBLISH) is ignored: the session is thrown away


async def probe_broker(config: GatewayConfig, acl_file: Path | None = DEFAULT_ACL_FILE) -> list[Check]:
    cfg = config.mqtt
    topics = TopicRouter(list(config.devices)).subscriptions()
    if cfg is None:
        return [skipped("broker", "no [mqtt] section: no MQTT devices")]
    where = f"{cfg.host}:{cfg.port}" + (" (TLS)" if cfg.tls.enabled else "")
    try:
        password = read_secret(file=cfg.password_file, env="SDGW_MQTT_PASSWORD", what="mqtt.password_file")
        ctx = tls_context(cfg)
    except ConfigError as exc:
        p = exc.problems[0]
        return [failed("broker: credentials", f"{p.key}: {p.found}", secret_fix(exc.path))]
    except (OSError, ssl.SSLError) as exc:
        return [failed("broker: TLS", f"TLS files: {exc}", "check [mqtt.tls] ca_file, cert_file and key_file")]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port, ssl=ctx, server_hostname=cfg.host if ctx else None),
            TIMEOUT_S,
        )
    except ssl.SSLError as exc:
        return [
            failed(
                "broker: connect",
                f"TLS handshake with {where} failed: {exc.reason or exc}",
                "the broker's certificate must be signed by [mqtt.tls] ca_file and name the host in [mqtt] host",
            )
        ]
    except (OSError, TimeoutError) as exc:
        return [
            failed(
                "broker: connect",
                f"cannot reach {where}: {exc or 'timed out'}",
                "is Mosquitto running (systemctl status mosquitto)? [mqtt] host/port must match a listener in "
                "/etc/mosquitto/conf.d/sdgw.conf",
            )
        ]
    checks = [passed("broker: connect", f"{where} reachable")]
    try:
        user = cfg.username or "(anonymous)"
        writer.write(
            mqtt5.ConnectPacket(
                f"sdgw-doctor-{config.gateway.id}-{os.getpid()}",
                username=cfg.username,
                password=password.encode() if password is not None else None,
                clean_start=True,
                keep_alive=30,
                session_expiry_interval=0,
            ).write()
        )
        connack = await asyncio.wait_for(_until(reader, mqtt5.ConnAckPacket), TIMEOUT_S)
        code = connack.reason_code
        if code != mqtt5.ConnAckReasonCode.SUCCESS:
            fix = {  # keyed by int: mqtt5's enums are not hashable
                int(mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD): (
                    f"the password in [mqtt] password_file must be the one of user {user} in the broker's password "
                    f"file: mosquitto_passwd /etc/mosquitto/sdgw/passwd {cfg.username or '<user>'}"
                ),
                # Mosquitto 2.0.11 answers a wrong password with this code too (measured)
                int(mqtt5.ConnAckReasonCode.NOT_AUTHORIZED): (
                    "set [mqtt] username and password_file, and make the password the one of that user in the "
                    "broker's password file (install.sh made user sdgw; its password is "
                    "/etc/sdgw/credentials/mqtt-password): mosquitto_passwd /etc/mosquitto/sdgw/passwd "
                    f"{cfg.username or 'sdgw'}"
                ),
            }.get(int(code), "see the broker's log: journalctl -u mosquitto")
            checks.append(failed("broker: login", f"refused user {user}: {code.name} ({int(code)})", fix))
            return checks
        checks.append(passed("broker: login", f"accepted user {user}"))
        if not topics:
            checks.append(skipped("broker: subscriptions", "no MQTT devices configured"))
        else:
            filters = [
                mqtt5.TopicFilter(t, max_qos=mqtt5.QoS(1), retain_handling=mqtt5.RetainHandling.SEND_NEVER)
                for t in topics
            ]
            writer.write(mqtt5.SubscribePacket(1, filters).write())
            suback = await asyncio.wait_for(_until(reader, mqtt5.SubAckPacket), TIMEOUT_S)
            codes = list(suback.reason_codes)
            refused = [t for t, c in zip(topics, codes, strict=False) if int(c) >= 0x80]
            qos0 = [t for t, c in zip(topics, codes, strict=False) if int(c) == 0]
            if refused:
                checks.append(
                    failed(
                        "broker: subscriptions",
                        f"the broker refused {len(refused)} of {len(topics)}: " + ", ".join(refused),
                        f"let user {user} read them: a `topic read <filter>` line under `user {user}` in the "
                        f"broker's ACL ({acl_file or DEFAULT_ACL_FILE}), then systemctl reload mosquitto",
                    )
                )
            elif qos0:
                checks.append(
                    failed(
                        "broker: subscriptions",
                        "granted only QoS 0 (messages can be lost): " + ", ".join(qos0),
                        "the broker's max_qos must allow QoS 1",
                    )
                )
            else:
                checks.append(passed("broker: subscriptions", f"the broker granted all {len(topics)} at QoS 1"))
            checks.append(check_acl_file(acl_file, cfg.username, topics))
        writer.write(mqtt5.DisconnectPacket().write())
        await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        checks.append(
            failed(
                "broker: login", f"the broker closed or did not answer: {exc or 'timeout'}", "journalctl -u mosquitto"
            )
        )
    finally:
        writer.close()
    return checks


def check_acl_file(path: Path | None, user: str | None, topics: list[str]) -> Check:
    """The local broker's ACL file read as Mosquitto reads it (its SUBACK grants what it then filters)."""
    if path is None:
        return skipped("broker: acl file", "not checked (--mosquitto-acl none)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return skipped("broker: acl file", f"no {path} here: only the broker's SUBACK was checked")
    except OSError as exc:
        return skipped("broker: acl file", f"cannot read {path} ({exc.strerror}): run doctor as root to check it")
    denied = [t for t in topics if not readable(text, user, t)]
    who = user or "(anonymous)"
    if denied:
        return failed(
            "broker: acl file",
            f"{path} gives user {who} no read access to: " + ", ".join(denied) + " (the broker accepts the "
            "subscription and then delivers nothing)",
            f"add `topic read <filter>` under `user {who}` in {path}, or publish the device under "
            "<kind>/<device id>/…, then systemctl reload mosquitto",
        )
    return passed("broker: acl file", f"{path} lets user {who} read all {len(topics)} device topic(s)")
