"""GS1 EPC: SGTIN-96 → GTIN-14 and serial; every other scheme stays hex. Shared by the RFID codecs.

Source: device-protocols.md §3 (GS1 EPC Tag Data Standard, TDT 2.0 tables; epcpy 0.1.8).

    bits  0–7    8  header 0x30 = SGTIN-96 (0x36 would be SGTIN-198: not decoded, kept as hex)
    bits  8–10   3  filter value (epcpy does not keep it: read here from byte 1, bits 7–5)
    bits 11–13   3  partition P → company prefix M bits / L digits, item reference N bits / K digits
    bits 14–…    M  GS1 company prefix, zero-padded to L digits
    bits  …      N  indicator digit + item reference, zero-padded to K digits (M + N = 44)
    bits 58–95  38  serial, decimal without leading zeros

    GTIN-14 = indicator + company prefix + rest of item reference + GS1 mod-10 check digit
    (weights 3,1,3,… from the rightmost of the 13 digits).

Worked example (§3.3 S1, GS1 TDS Annex E): `3074257BF7194E4000001A85` → filter 3, partition 5,
company prefix 0614141, item reference 812345, serial 6789 → `urn:epc:id:sgtin:0614141.812345.6789`,
GTIN-14 80614141123458, element string (01)80614141123458(21)6789.

epcpy raises `ConvertException` for unknown headers, partition 7 and out-of-range prefixes or item
references, and accepts a 25-digit string: the length and header are checked here first and every
epcpy exception means "not an SGTIN-96", never an error of the read.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

from epcpy.epc_schemes.sgtin import SGTIN

SGTIN96_HEADER = 0x30
SGTIN96_HEX_DIGITS = 24
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class Sgtin96:
    gtin14: str
    serial: str
    filter_value: int
    epc_uri: str  # pure identity URI

    @property
    def tag_uri(self) -> str:
        company_prefix, item_ref, serial = self.epc_uri.rsplit(":", 1)[1].split(".")
        return f"urn:epc:tag:sgtin-96:{self.filter_value}.{company_prefix}.{item_ref}.{serial}"

    @property
    def element_string(self) -> str:
        return f"(01){self.gtin14}(21){self.serial}"


@functools.lru_cache(maxsize=8192)
def sgtin96(epc_hex: str) -> Sgtin96 | None:
    """The SGTIN-96 fields of an EPC, or None when it is another scheme or not a valid SGTIN-96.

    Cached: a reader sees the same few hundred tags many times a second, and epcpy's parse costs
    more than the rest of the read's path together (pure function, immutable result)."""
    if len(epc_hex) != SGTIN96_HEX_DIGITS or not _HEX.issuperset(epc_hex) or int(epc_hex[:2], 16) != SGTIN96_HEADER:
        return None
    try:
        sgtin = SGTIN.from_hex(epc_hex.upper())
        gtin14 = sgtin.gs1_key()
        uri = sgtin.epc_uri
    except Exception:  # epcpy's ConvertException and anything else it raises on odd input
        return None
    return Sgtin96(gtin14, uri.rsplit(".", 1)[1], int(epc_hex[2:4], 16) >> 5, uri)


def gtin_and_serial(epc_hex: str) -> tuple[str | None, str | None]:
    """(GTIN-14, serial) for an SGTIN-96 EPC, else (None, None): the EPC is kept as hex."""
    fields = sgtin96(epc_hex)
    return (fields.gtin14, fields.serial) if fields else (None, None)
