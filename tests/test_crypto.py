"""agentchat_mcp.crypto: round trips work, and anything tampered, moved or misaddressed fails to open."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from agentchat_mcp.crypto import (
    API_KEY_PREFIX,
    EpochKey,
    KeyBundle,
    MessageContext,
    PublicKeys,
    hash_api_key,
    new_api_key,
    new_id,
    new_secret,
    signed_payload,
    verify_signature,
)
from agentchat_mcp.errors import AgentChatError, DecryptionFailed

CTX = MessageContext(conversation_id="cnv_abc", epoch=2, seq=7, sender_id="agt_alice")


def flip_byte(data: bytes, position: int) -> bytes:
    """Like pynacl's tests/utils.py flip_byte: the same bytes with one byte changed."""
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


# --- API keys, secrets and ids ---------------------------------------------------------------------


def test_new_api_key_has_the_prefix_and_43_url_safe_chars() -> None:
    key = new_api_key()
    assert key.startswith(API_KEY_PREFIX)
    assert re.fullmatch(r"acp_[A-Za-z0-9_-]{43}", key)


def test_new_api_key_differs_each_time() -> None:
    assert len({new_api_key() for _ in range(50)}) == 50


def test_new_secret_is_32_random_bytes() -> None:
    secret = new_secret()
    assert isinstance(secret, bytes)
    assert len(secret) == 32
    assert new_secret() != secret


def test_hash_api_key_is_stable_for_the_same_secret_and_key() -> None:
    secret, key = new_secret(), new_api_key()
    assert hash_api_key(secret, key) == hash_api_key(secret, key)
    assert re.fullmatch(r"[0-9a-f]{64}", hash_api_key(secret, key))


def test_hash_api_key_differs_per_secret_and_per_key() -> None:
    key = new_api_key()
    assert hash_api_key(new_secret(), key) != hash_api_key(new_secret(), key)
    secret = new_secret()
    assert hash_api_key(secret, key) != hash_api_key(secret, new_api_key())


def test_hash_api_key_does_not_contain_the_key() -> None:
    secret, key = new_secret(), new_api_key()
    assert key not in hash_api_key(secret, key)
    assert key[len(API_KEY_PREFIX) :] not in hash_api_key(secret, key)


@pytest.mark.parametrize("prefix", ["cnv", "agt", "msg"])
def test_new_id_is_the_prefix_and_20_lowercase_alphanumerics(prefix: str) -> None:
    for _ in range(20):
        assert re.fullmatch(rf"{prefix}_[a-z0-9]{{20}}", new_id(prefix))


def test_new_id_differs_each_time() -> None:
    assert len({new_id("cnv") for _ in range(100)}) == 100


# --- Key bundles -----------------------------------------------------------------------------------


def test_a_bundle_has_32_byte_public_keys() -> None:
    public = KeyBundle.generate().public
    assert isinstance(public, PublicKeys)
    assert len(public.box) == 32
    assert len(public.sign) == 32


def test_bundles_are_distinct() -> None:
    assert KeyBundle.generate().public != KeyBundle.generate().public


def test_a_wrapped_bundle_unwraps_with_its_api_key() -> None:
    bundle, api_key = KeyBundle.generate(), new_api_key()
    wrapped = bundle.wrap(api_key)
    assert wrapped[:1] == b"\x01"
    restored = KeyBundle.unwrap(wrapped, api_key)
    assert restored.public == bundle.public
    data = b"hello"
    verify_signature(bundle.public.sign, data, restored.sign(data))


def test_wrapping_twice_gives_different_bytes() -> None:
    bundle, api_key = KeyBundle.generate(), new_api_key()
    assert bundle.wrap(api_key) != bundle.wrap(api_key)


def test_a_wrapped_bundle_does_not_contain_the_raw_private_keys() -> None:
    bundle, api_key = KeyBundle.generate(), new_api_key()
    wrapped = bundle.wrap(api_key)
    box_private = bytes(bundle._box_key)
    sign_seed = bytes(bundle._sign_key)
    assert len(box_private) == len(sign_seed) == 32
    assert box_private not in wrapped
    assert sign_seed not in wrapped
    assert api_key.encode() not in wrapped


def test_unwrapping_with_another_api_key_fails() -> None:
    wrapped = KeyBundle.generate().wrap(new_api_key())
    with pytest.raises(DecryptionFailed, match="could not be unwrapped with this API key"):
        KeyBundle.unwrap(wrapped, new_api_key())


def test_a_tampered_wrapped_bundle_fails_to_unwrap_at_every_position() -> None:
    api_key = new_api_key()
    wrapped = KeyBundle.generate().wrap(api_key)
    for position in range(len(wrapped)):
        with pytest.raises(DecryptionFailed):
            KeyBundle.unwrap(flip_byte(wrapped, position), api_key)


@pytest.mark.parametrize("wrapped", [b"", b"\x01", b"\x01" + b"\x00" * 10, b"\x02" + b"\x00" * 120])
def test_malformed_wrapped_bundles_fail_to_unwrap(wrapped: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        KeyBundle.unwrap(wrapped, new_api_key())


def test_unwrap_failure_is_an_agent_safe_error_without_the_key() -> None:
    api_key, other = new_api_key(), new_api_key()
    with pytest.raises(AgentChatError) as info:
        KeyBundle.unwrap(KeyBundle.generate().wrap(api_key), other)
    assert api_key not in str(info.value)
    assert other not in str(info.value)


def test_open_sealed_fails_on_garbage() -> None:
    with pytest.raises(DecryptionFailed):
        KeyBundle.generate().open_sealed(b"\x00" * 80)


# --- Signatures ------------------------------------------------------------------------------------


def test_a_signature_verifies_for_its_signer_and_data() -> None:
    bundle = KeyBundle.generate()
    signature = bundle.sign(b"payload")
    assert len(signature) == 64
    verify_signature(bundle.public.sign, b"payload", signature)


def test_a_signature_fails_on_altered_data() -> None:
    bundle = KeyBundle.generate()
    data = b"some signed payload"
    signature = bundle.sign(data)
    for position in range(len(data)):
        with pytest.raises(DecryptionFailed, match="signature"):
            verify_signature(bundle.public.sign, flip_byte(data, position), signature)


def test_an_altered_signature_fails() -> None:
    bundle = KeyBundle.generate()
    signature = bundle.sign(b"data")
    for position in range(len(signature)):
        with pytest.raises(DecryptionFailed):
            verify_signature(bundle.public.sign, b"data", flip_byte(signature, position))


def test_a_signature_fails_for_another_signer() -> None:
    signature = KeyBundle.generate().sign(b"data")
    with pytest.raises(DecryptionFailed):
        verify_signature(KeyBundle.generate().public.sign, b"data", signature)


@pytest.mark.parametrize(
    ("public_sign", "signature"),
    [(b"\x00" * 31, b"\x00" * 64), (b"\x00" * 33, b"\x00" * 64), (None, b"\x00" * 63), (None, b"")],
)
def test_verify_signature_fails_on_bad_lengths(public_sign: bytes | None, signature: bytes) -> None:
    key = public_sign if public_sign is not None else KeyBundle.generate().public.sign
    with pytest.raises(DecryptionFailed):
        verify_signature(key, b"data", signature)


def test_signed_payload_binds_context_and_ciphertext() -> None:
    sealed = EpochKey.generate().seal("hi", ctx=CTX)
    payload = signed_payload(CTX, sealed)
    assert payload == CTX.associated_data() + b"\x00" + sealed
    assert signed_payload(replace(CTX, seq=8), sealed) != payload
    assert signed_payload(CTX, flip_byte(sealed, 0)) != payload


# --- Message context -------------------------------------------------------------------------------


def test_associated_data_is_the_fields_joined_by_nul() -> None:
    assert CTX.associated_data() == b"cnv_abc\x002\x007\x00agt_alice"


# --- Epoch keys and messages -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello", "", "ünïcødé ✓ 🔐", "x" * 10_000])
def test_a_sealed_message_opens_with_the_same_key_and_context(text: str) -> None:
    key = EpochKey.generate()
    assert key.open(key.seal(text, ctx=CTX), ctx=CTX) == text


def test_sealing_twice_uses_a_fresh_nonce() -> None:
    key = EpochKey.generate()
    first, second = key.seal("same", ctx=CTX), key.seal("same", ctx=CTX)
    assert first != second
    assert first[:24] != second[:24]


def test_a_sealed_message_does_not_contain_the_plaintext() -> None:
    sealed = EpochKey.generate().seal("top secret plan", ctx=CTX)
    assert b"top secret plan" not in sealed


def test_flipping_any_byte_of_a_sealed_message_fails_to_open() -> None:
    key = EpochKey.generate()
    sealed = key.seal("a short message", ctx=CTX)
    assert len(sealed) == 24 + 16 + len("a short message")
    for position in range(len(sealed)):
        with pytest.raises(DecryptionFailed, match=f"Message {CTX.seq} could not be opened"):
            key.open(flip_byte(sealed, position), ctx=CTX)


@pytest.mark.parametrize(
    "other",
    [
        replace(CTX, conversation_id="cnv_other"),
        replace(CTX, epoch=3),
        replace(CTX, seq=8),
        replace(CTX, sender_id="agt_mallory"),
    ],
)
def test_a_message_moved_to_another_context_fails_to_open(other: MessageContext) -> None:
    key = EpochKey.generate()
    sealed = key.seal("hello", ctx=CTX)
    with pytest.raises(DecryptionFailed, match=f"Message {other.seq} could not be opened"):
        key.open(sealed, ctx=other)


def test_a_message_fails_to_open_under_another_epoch_key() -> None:
    sealed = EpochKey.generate().seal("hello", ctx=CTX)
    with pytest.raises(DecryptionFailed):
        EpochKey.generate().open(sealed, ctx=CTX)


@pytest.mark.parametrize("sealed", [b"", b"\x00" * 10, b"\x00" * 24, b"\x00" * 39, b"\x00" * 40])
def test_truncated_messages_fail_to_open(sealed: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        EpochKey.generate().open(sealed, ctx=CTX)


def test_a_truncated_real_message_fails_to_open() -> None:
    key = EpochKey.generate()
    sealed = key.seal("hello", ctx=CTX)
    with pytest.raises(DecryptionFailed):
        key.open(sealed[:-1], ctx=CTX)


def test_authentic_bytes_that_are_not_utf8_fail_to_open() -> None:
    key = EpochKey.generate()
    sealed = bytes(key._aead.encrypt(b"\xff\xfe", CTX.associated_data()))
    with pytest.raises(DecryptionFailed):
        key.open(sealed, ctx=CTX)


def test_the_error_message_does_not_leak_the_plaintext() -> None:
    key = EpochKey.generate()
    sealed = key.seal("the secret text", ctx=CTX)
    with pytest.raises(DecryptionFailed) as info:
        key.open(sealed, ctx=replace(CTX, seq=99))
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33])
def test_an_epoch_key_of_the_wrong_length_is_rejected(raw: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EpochKey(raw)


def test_an_epoch_key_from_fixed_bytes_interoperates() -> None:
    raw = bytes(range(32))
    sealed = EpochKey(raw).seal("hi", ctx=CTX)
    assert EpochKey(raw).open(sealed, ctx=CTX) == "hi"


def test_an_epoch_key_does_not_expose_its_raw_bytes() -> None:
    key = EpochKey.generate()
    with pytest.raises(TypeError):
        bytes(key)  # type: ignore[call-overload]


def test_an_epoch_key_wrapped_for_a_reader_unwraps_for_that_reader() -> None:
    alice = KeyBundle.generate()
    key = EpochKey.generate()
    sealed = key.seal("hello alice", ctx=CTX)
    restored = EpochKey.unwrap(key.wrap_for(alice.public.box), alice)
    assert restored.open(sealed, ctx=CTX) == "hello alice"


def test_an_epoch_key_wrapped_for_a_does_not_unwrap_for_b() -> None:
    alice, bob = KeyBundle.generate(), KeyBundle.generate()
    wrapped = EpochKey.generate().wrap_for(alice.public.box)
    with pytest.raises(DecryptionFailed):
        EpochKey.unwrap(wrapped, bob)


def test_a_wrapped_epoch_key_does_not_contain_the_raw_key() -> None:
    raw = bytes(range(32))
    wrapped = EpochKey(raw).wrap_for(KeyBundle.generate().public.box)
    assert raw not in wrapped


def test_a_tampered_wrapped_epoch_key_fails_to_unwrap() -> None:
    alice = KeyBundle.generate()
    wrapped = EpochKey.generate().wrap_for(alice.public.box)
    for position in range(len(wrapped)):
        with pytest.raises(DecryptionFailed):
            EpochKey.unwrap(flip_byte(wrapped, position), alice)


def test_an_unwrapped_key_of_the_wrong_length_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    alice = KeyBundle.generate()
    wrapped = EpochKey.generate().wrap_for(alice.public.box)
    monkeypatch.setattr(KeyBundle, "open_sealed", lambda self, sealed: b"\x00" * 31)
    with pytest.raises(DecryptionFailed, match="malformed"):
        EpochKey.unwrap(wrapped, alice)


@pytest.mark.parametrize("public", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrap_for_rejects_a_public_key_of_the_wrong_length(public: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EpochKey.generate().wrap_for(public)


def test_a_full_message_flow_opens_and_verifies() -> None:
    alice, bob = KeyBundle.generate(), KeyBundle.generate()
    alice_key, bob_key = new_api_key(), new_api_key()
    stored_alice, stored_bob = alice.wrap(alice_key), bob.wrap(bob_key)

    epoch = EpochKey.generate()
    wrapped_for = {"alice": epoch.wrap_for(alice.public.box), "bob": epoch.wrap_for(bob.public.box)}

    # Alice sends during her request.
    sender = KeyBundle.unwrap(stored_alice, alice_key)
    ctx = MessageContext(conversation_id=new_id("cnv"), epoch=1, seq=1, sender_id="alice")
    sealed = EpochKey.unwrap(wrapped_for["alice"], sender).seal("hi bob", ctx=ctx)
    signature = sender.sign(signed_payload(ctx, sealed))

    # Bob reads during his.
    reader = KeyBundle.unwrap(stored_bob, bob_key)
    verify_signature(alice.public.sign, signed_payload(ctx, sealed), signature)
    assert EpochKey.unwrap(wrapped_for["bob"], reader).open(sealed, ctx=ctx) == "hi bob"

    # Re-attributed to Bob, both the signature and the ciphertext fail.
    forged = replace(ctx, sender_id="bob")
    with pytest.raises(DecryptionFailed):
        verify_signature(bob.public.sign, signed_payload(forged, sealed), signature)
    with pytest.raises(DecryptionFailed):
        EpochKey.unwrap(wrapped_for["bob"], reader).open(sealed, ctx=forged)
