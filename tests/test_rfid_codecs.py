"""RFID codecs beyond the vectors: command encoders byte-exact against device-protocols.md §2, CRC
check values, EPC decoding (§3.3), card renderings (§1.2), and the MQTT JSON contract's tolerance."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import chafon, epc, m100, rdm6300, rfid_json
from devices.events import InventoryRound, ReaderFault, Reject, RejectReason, TagKind, TagRead

H = bytes.fromhex


# --- command encoders (§2.1, §2.2) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(m100.single_poll(), "BB 00 22 00 00 22 7E", id="m100-single-poll"),
        pytest.param(m100.multi_poll(10_000), "BB 00 27 00 03 22 27 10 83 7E", id="m100-multi-poll-10000"),
        pytest.param(m100.stop_multi_poll(), "BB 00 28 00 00 28 7E", id="m100-stop"),
        pytest.param(m100.version_query(0), "BB 00 03 00 01 00 04 7E", id="m100-hardware-version"),
        pytest.param(m100.set_region(1), "BB 00 07 00 01 01 09 7E", id="m100-region-china-900"),
        pytest.param(m100.set_baud(19200), "BB 00 11 00 02 00 C0 D3 7E", id="m100-baud-19200"),
        pytest.param(m100.frame(1, 0x28, b"\x00"), "BB 01 28 00 01 00 2A 7E", id="m100-stop-response"),
        pytest.param(chafon.inventory_18(), "04 FF 01 1B B4", id="chafon-inventory-18-broadcast"),
        pytest.param(chafon.get_reader_info(0), "04 00 21 D9 6A", id="chafon-reader-info-addr-0"),
    ],
)
def test_command_encoders_match_the_documented_frames(built, expected):
    assert built == H(expected)


def test_chafon_288_inventory_defaults_are_chafon_rfid_data():
    """§2.2 [TEST]: chafon-rfid's default data 0F 00 01 00 00 00 00 80 14; Len 13, CRC LSB first."""
    frame = chafon.inventory_288()
    assert frame[:3] == H("0D FF 01") and frame[3:-2] == H("0F 00 01 00 00 00 00 80 14")
    assert chafon.crc16(frame) == 0
    assert chafon.inventory_288(antenna=4, scan_time_ms=1000)[3:-2] == H("0F 00 01 00 00 00 00 83 0A")


def test_start_commands_stop_then_poll_and_are_resent():
    assert m100.start_commands() == [m100.stop_multi_poll(), H("BB 00 27 00 03 22 FF FF 4A 7E")]
    assert chafon.start_commands_18() == [H("04 FF 01 1B B4")]
    assert chafon.start_commands_288()[0][3:-2] == H("0F 00 01 00 00 00 00 80 0A")


def test_m100_tx_power_is_dbm_times_100_big_endian():
    assert m100.set_tx_power(26)[5:7] == (2600).to_bytes(2, "big")


def test_encoders_refuse_out_of_range_arguments():
    with pytest.raises(ValueError):
        m100.multi_poll(70_000)
    with pytest.raises(ValueError):
        chafon.inventory_288(antenna=5)


# --- CRCs ----------------------------------------------------------------------------------------


def test_crc_check_values():
    """CRC-16/MCRF4XX "123456789" = 0x6F91 (uhfreader18 tests); CRC-16/GENIBUS = 0xD64E (§2.1)."""
    assert chafon.crc16(b"123456789") == 0x6F91
    assert m100.gen2_crc(b"123456789") == 0xD64E
    assert m100.gen2_crc(H("3400 30751FEB705C5904E3D50D70")) == 0x3A76  # U1's tag CRC


# --- EPC (§3.3) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_", "gtin14", "serial", "filter_", "uri", "tag_uri"),
    [
        pytest.param(
            "3074257BF7194E4000001A85",
            "80614141123458",
            "6789",
            3,
            "urn:epc:id:sgtin:0614141.812345.6789",
            "urn:epc:tag:sgtin-96:3.0614141.812345.6789",
            id="S1-annex-e",
        ),
        pytest.param(
            "30C579D5D4ADB60000000000",
            "85071219236581",
            "0",
            6,
            "urn:epc:id:sgtin:50712192365.88.0",
            "urn:epc:tag:sgtin-96:6.50712192365.88.0",
            id="S2-epcpy-test",
        ),
        pytest.param(
            "3034007D00011C400000000B",
            "00008000011378",
            "11",
            1,
            "urn:epc:id:sgtin:0008000.001137.11",
            "urn:epc:tag:sgtin-96:1.0008000.001137.11",
            id="S3-epcGS1coder-test",
        ),
    ],
)
def test_sgtin96_worked_examples(hex_, gtin14, serial, filter_, uri, tag_uri):
    fields = epc.sgtin96(hex_)
    assert (fields.gtin14, fields.serial, fields.filter_value, fields.epc_uri) == (gtin14, serial, filter_, uri)
    assert fields.tag_uri == tag_uri
    assert epc.sgtin96(hex_.lower()) == fields


def test_s1_element_string():
    assert epc.sgtin96("3074257BF7194E4000001A85").element_string == "(01)80614141123458(21)6789"


@pytest.mark.parametrize(
    "hex_",
    [
        pytest.param("E2801160600002054CC2028B", id="tid-style-header"),
        pytest.param("000000000000000000000000", id="all-zero"),
        pytest.param("3074257BF7194E4000001A8", id="25th-digit-missing"),
        pytest.param("3074257BF7194E4000001A850", id="25-digits"),
        pytest.param("307C257BF7194E4000001A85", id="partition-7"),
        pytest.param("36" + "0" * 50, id="sgtin-198-kept-as-hex"),
        pytest.param("30742 7BF7194E4000001A85", id="not-hex"),
    ],
)
def test_other_epcs_stay_hex(hex_):
    assert epc.sgtin96(hex_) is None
    assert epc.gtin_and_serial(hex_) == (None, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12))
def test_sgtin96_never_raises_and_gtin_check_digit_holds(raw):
    fields = epc.sgtin96(b"\x30".hex() + raw[1:].hex())
    if fields is not None:
        digits = [int(c) for c in fields.gtin14]
        weighted = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:13])))
        assert (10 - weighted % 10) % 10 == digits[13]


# --- RDM6300 card renderings (§1.1, §1.2) -------------------------------------------------------


@pytest.mark.parametrize(
    ("tag_hex", "decimal", "w26"),
    [
        pytest.param("01000734E0", "0000472288", "007,13536", id="R1"),
        pytest.param("67003B51C6", "0003887558", "059,20934", id="R2"),
        pytest.param("100086F444", "0008844356", "134,62532", id="R3"),
        pytest.param("00000AE70F", "0000714511", "010,59151", id="stackoverflow-30173292"),
    ],
)
def test_rdm6300_printed_numbers(tag_hex, decimal, w26):
    assert rdm6300.printed_numbers(tag_hex) == (decimal, w26)


def test_rdm6300_r2_type_and_checksum_as_python_rdm6300_expects():
    """§1.2 R2: type 103 (0x67), value 3887558, checksum 203 (0xCB)."""
    (read,) = rdm6300.decode(H("02 36 37 30 30 33 42 35 31 43 36 43 42 03"), received_ns=0)
    assert int(read.tag_hex[:2], 16) == 103 and int(read.tag_hex[2:], 16) == 3887558
    assert read.is_personal and read.tag_kind is TagKind.EM4100


# --- M100 answers ----------------------------------------------------------------------------------


def test_m100_no_tag_is_an_empty_round_not_a_fault():
    assert m100.decode(H("BB 01 FF 00 01 15 16 7E"), received_ns=0) == [InventoryRound(0, 0, True)]


def test_m100_notice_with_xpc_word_keeps_the_epc_only():
    """PC with the XI bit: an XPC_W1 word sits between PC and EPC; the EPC is what PC's length says."""
    epc_bytes = H("30751FEB705C5904E3D50D70")
    pc_xpc_epc = bytes((6 << 3 | 0x02, 0)) + b"\x00\x00" + epc_bytes
    frame = m100.frame(2, 0x22, b"\xc9" + pc_xpc_epc + m100.gen2_crc(pc_xpc_epc).to_bytes(2, "big"))
    (read,) = m100.decode(frame, received_ns=0)
    assert read.tag_hex == epc_bytes.hex().upper()


def test_m100_pc_length_disagreeing_with_pl_is_rejected():
    pc_epc = bytes((5 << 3, 0)) + bytes(12)
    frame = m100.frame(2, 0x22, b"\xc9" + pc_epc + m100.gen2_crc(pc_epc).to_bytes(2, "big"))
    assert m100.decode(frame, received_ns=0).reason is RejectReason.SANITY


# --- Chafon answers --------------------------------------------------------------------------------


def test_chafon_memory_full_keeps_tags_and_reports_the_fault():
    body = H("0D 00 01 04 01 01 04 00 32 30 38 6D")  # C2 with status 04: Ant 1, 1 tag, 4-byte EPC, RSSI
    frame = body + chafon.crc16(body).to_bytes(2, "little")
    events = chafon.decode_288(frame, received_ns=0)
    assert [type(e) for e in events] == [TagRead, ReaderFault, InventoryRound]
    assert events[1] == ReaderFault(4, "reader memory full") and events[2].is_complete


# --- the MQTT JSON contract ----------------------------------------------------------------------


def _decode(doc) -> list | Reject:
    return rfid_json.decode(json.dumps(doc).encode(), received_ns=0)


def test_rfid_json_keys_case_and_separators_tolerated():
    a = _decode({"Reader": "r1", "Reads": [{"EPC": "00323038", "Antenna_Port": 2, "PEAK-RSSI": -50, "Read_Count": 3}]})
    b = _decode({"reader": "r1", "reads": [{"epc": "00323038", "antennaport": 2, "peakrssi": -50, "readcount": 3}]})
    assert a == b and a[0].antenna == 2 and a[0].read_count == 3 and a[0].rssi_dbm == -50.0


def test_rfid_json_epc_separators_dropped():
    (read,) = _decode({"epc": "30:74:25:7b:f7:19:4e:40:00:00:1a:85"})
    assert read.tag_hex == "3074257BF7194E4000001A85" and read.gtin14 == "80614141123458"


def test_rfid_json_read_level_reader_overrides_message_reader():
    reads = _decode({"reader": "hub", "reads": [{"epc": "0032", "reader": "door"}, {"epc": "0033"}]})
    assert [r.reader for r in reads] == ["door", "hub"]


def test_rfid_json_rejects_mask_card_ids():
    """A rejected message that mentions em4100 is dead-lettered with its hex digits masked (D13)."""
    bad = _decode({"reads": [{"em4100": "01000734E0", "rssi": 99}]})
    assert bad.reason is RejectReason.SANITY
    assert b"01000734" not in bad.raw.upper()


def test_rfid_json_epoch_ms_with_fraction():
    (read,) = _decode({"epc": "0032", "ts": 1710000000000.5})
    assert read.read_ns == 1_710_000_000_000_500_000


def test_rfid_json_too_many_reads_is_oversize():
    assert _decode({"reads": [{"epc": "00"}] * (rfid_json.MAX_READS + 1)}).reason is RejectReason.OVERSIZE


_keys = st.sampled_from(
    ["reader", "reads", "tags", "epc", "em4100", "antenna", "rssi", "count", "ts", "idHex", "peakRssiCdbm", "x"]
)


@settings(max_examples=300, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=6),
        max_leaves=30,
    )
)
def test_rfid_json_never_raises_on_random_json(doc):
    result = rfid_json.decode(json.dumps(doc).encode(), received_ns=0)
    assert isinstance(result, list | Reject)
