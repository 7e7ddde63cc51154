"""Signed ``up`` messages: the exact tail, the signed bytes, verification, and what a verifier refuses."""

from __future__ import annotations

import hashlib
import hmac

import msgpack
import numpy as np
import pytest

from flcore.errors import WireError
from flcore.messages import Up
from flcore.quantize import quantize
from flcore.signing import SIG_TAIL, TAIL_BYTES, parse_key, sign, split, verify

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def make_up(**changes: object) -> Up:
    scales, q = quantize(np.linspace(-1.0, 1.0, 17, dtype=np.float32), 5)
    fields = dict(dev="d0001", round=3, base=2, n=40, loss=0.75, seq=1_700_000_000_123, chunk=5, scales=scales, q=q)
    fields.update(changes)
    return Up(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("extra", [{}, {"sub": 1}, {"sub": 2, "meta": {"battery": 0.5, "fw": "1"}}])
def test_signed_bytes_are_the_unsigned_map_plus_a_last_sig(extra: dict) -> None:
    up = make_up(**extra)
    plain, signed = up.encode(), up.encode(key=KEY)
    assert len(signed) == len(plain) + 38
    assert signed[-38:-32] == bytes.fromhex("a3736967c420") == SIG_TAIL
    assert signed[0] == plain[0] + 1 and signed[1:-38] == plain[1:]  # the fixmap header counts `sig`
    expected_sig = hmac.new(KEY, signed[:-38], hashlib.sha256).digest()
    assert signed[-32:] == expected_sig
    # exactly what msgpack writes for the same map with `sig` as its last key
    obj = msgpack.unpackb(plain)
    obj["sig"] = expected_sig
    assert msgpack.packb(obj, use_bin_type=True) == signed
    assert list(msgpack.unpackb(signed))[-1] == "sig"


def test_unsigned_encoding_is_unchanged() -> None:
    up = make_up(sub=1)
    assert up.encode() == up.encode(key=None)
    assert b"sig" not in up.encode()
    assert Up.decode(up.encode()).sig is None


def test_decode_keeps_the_sig_and_re_encodes_the_same_bytes() -> None:
    signed = make_up(meta={"fw": "x"}).encode(key=KEY)
    back = Up.decode(signed, params=17, topic_dev="d0001")
    assert back.sig == signed[-32:]
    assert back.encode() == signed
    assert split(signed) == (signed[:-TAIL_BYTES], signed[-32:])


def test_verify_accepts_the_right_key_only() -> None:
    signed = make_up().encode(key=KEY)
    verify(signed, KEY)
    with pytest.raises(WireError) as info:
        verify(signed, OTHER)
    assert info.value.reason == "signature"


def test_flipping_any_single_byte_fails_verification() -> None:
    signed = make_up(sub=1, meta={"battery": 0.25}).encode(key=KEY)
    for i in range(len(signed)):
        for bit in (0x01, 0x80):
            forged = bytearray(signed)
            forged[i] ^= bit
            with pytest.raises(WireError) as info:
                verify(bytes(forged), KEY)
            assert info.value.reason == "signature", (i, bit)


def test_changed_field_with_the_old_sig_fails() -> None:
    up = make_up()
    old = up.encode(key=KEY)
    forged = make_up(round=4, sig=old[-32:]).encode()  # the round changed, the captured sig re-attached
    assert Up.decode(forged).sig == old[-32:]  # well-formed...
    with pytest.raises(WireError, match="HMAC mismatch"):
        verify(forged, KEY)  # ...but not signed by the key


def test_a_sig_that_is_not_last_is_refused() -> None:
    plain = make_up().encode()
    obj = msgpack.unpackb(plain)
    sig = sign(plain, KEY)[-32:]
    moved = msgpack.packb({"sig": sig, **obj}, use_bin_type=True)
    for payload in (moved,):
        with pytest.raises(WireError) as info:
            Up.decode(payload)
        assert info.value.reason == "signature" and (info.value.round, info.value.seq) == (3, 1_700_000_000_123)
        with pytest.raises(WireError):
            verify(payload, KEY)


@pytest.mark.parametrize("bad", [b"short", 32 * "x", 7, None])
def test_a_sig_that_is_not_bin_32_is_refused(bad: object) -> None:
    obj = msgpack.unpackb(make_up().encode())
    obj["sig"] = bad
    with pytest.raises(WireError) as info:
        Up.decode(msgpack.packb(obj, use_bin_type=True))
    assert info.value.reason == "signature"


def test_an_unsigned_payload_does_not_verify() -> None:
    with pytest.raises(WireError) as info:
        verify(make_up().encode(), KEY)
    assert info.value.reason == "signature"


def test_a_sixteenth_entry_turns_the_fixmap_into_a_map16() -> None:
    obj = {f"k{i}": i for i in range(15)}
    plain = msgpack.packb(obj, use_bin_type=True)
    signed = sign(plain, KEY)
    assert signed[:3] == b"\xde\x00\x10"
    assert msgpack.unpackb(signed) == {**obj, "sig": signed[-32:]}
    verify(signed, KEY)


def test_parse_key() -> None:
    assert parse_key("00" * 31 + "ff") == bytes(31) + b"\xff"
    assert parse_key("AB" * 32) == b"\xab" * 32
    for bad in ("00" * 31, "00" * 33, "zz" * 32, "0" * 63):
        with pytest.raises(ValueError, match="64 hex digits"):
            parse_key(bad)
