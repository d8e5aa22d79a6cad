"""All cryptography for agentchat-mcp, in one place (the only module that imports nacl).

Envelope encryption (architecture.md section 4): each principal's private keys are wrapped under a key
derived from its API key; each conversation epoch has a random symmetric key, sealed once per reader;
messages are XChaCha20-Poly1305 with associated data binding them to their place, and signed by their
sender. The API is shaped so the safe way is the only way: callers never see nonces or raw keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import Aead, SecretBox
from nacl.signing import SigningKey, VerifyKey

from agentchat_mcp.errors import DecryptionFailed

__all__ = [
    "API_KEY_PREFIX",
    "EpochKey",
    "KeyBundle",
    "MessageContext",
    "PublicKeys",
    "hash_api_key",
    "new_api_key",
    "new_id",
    "new_secret",
    "signed_payload",
    "verify_signature",
]

API_KEY_PREFIX = "acp_"

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 20
_SECRET_BYTES = 32
_WRAP_VERSION = b"\x01"
_WRAP_PERSON = b"agentchat-wrap"  # blake2b personalization: keys derived here are used for nothing else
_PRIVATE_KEY_BYTES = 32
_MIN_SEALED_BYTES = Aead.NONCE_SIZE + Aead.MACBYTES


def new_api_key() -> str:
    """A fresh API key: 256 random bits, so it can also serve as key material (see KeyBundle.wrap)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> bytes:
    """A fresh 32-byte server secret, the key for hash_api_key."""
    return secrets.token_bytes(_SECRET_BYTES)


def hash_api_key(secret: bytes, api_key: str) -> str:
    """Keyed, deterministic hash of an API key, so the DB can look keys up without storing them.

    Keyed with the server secret so a leaked database alone cannot be used to test guessed keys.
    """
    return hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()


def new_id(prefix: str) -> str:
    """A random, unguessable id such as ``cnv_k3j9...``: the prefix says what it names."""
    return f"{prefix}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


@dataclass(frozen=True)
class PublicKeys:
    """A principal's public keys, safe to store and share."""

    box: bytes  # 32-byte X25519 public key: epoch keys are sealed to it
    sign: bytes  # 32-byte Ed25519 verify key: checks the principal's message signatures


def _wrap_key(api_key: str) -> bytes:
    # API keys carry 256 random bits, so a fast KDF is right: there is nothing to brute-force, and a
    # slow (password) KDF would cost every authenticated request.
    key: bytes = blake2b(api_key.encode(), digest_size=SecretBox.KEY_SIZE, person=_WRAP_PERSON, encoder=RawEncoder)
    return key


class KeyBundle:
    """A principal's private keys. Only ever in memory; stored only wrapped under its API key."""

    def __init__(self, box_key: PrivateKey, sign_key: SigningKey) -> None:
        self._box_key = box_key
        self._sign_key = sign_key

    @classmethod
    def generate(cls) -> KeyBundle:
        """Fresh X25519 and Ed25519 key pairs for a new principal."""
        return cls(PrivateKey.generate(), SigningKey.generate())

    @property
    def public(self) -> PublicKeys:
        """The public halves, to store in clear next to the wrapped private keys."""
        return PublicKeys(
            box=bytes(self._box_key.public_key),
            sign=bytes(self._sign_key.verify_key),
        )

    def wrap(self, api_key: str) -> bytes:
        """Encrypt the private keys under the API key, which the server never stores."""
        plaintext = bytes(self._box_key) + bytes(self._sign_key)  # X25519 private || Ed25519 seed
        return _WRAP_VERSION + bytes(SecretBox(_wrap_key(api_key)).encrypt(plaintext))

    @classmethod
    def unwrap(cls, wrapped: bytes, api_key: str) -> KeyBundle:
        """Recover the private keys; only possible during the principal's own authenticated request."""
        message = "Your private keys could not be unwrapped with this API key."
        if wrapped[:1] != _WRAP_VERSION:
            raise DecryptionFailed(message)
        try:
            plaintext = SecretBox(_wrap_key(api_key)).decrypt(wrapped[1:])
            # nacl rejects either half if it is not exactly 32 bytes, so a malformed payload fails here too.
            return cls(
                PrivateKey(plaintext[:_PRIVATE_KEY_BYTES]),
                SigningKey(plaintext[_PRIVATE_KEY_BYTES:]),
            )
        except CryptoError as exc:
            raise DecryptionFailed(message) from exc

    def sign(self, data: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature, so readers know who wrote a message."""
        signature: bytes = self._sign_key.sign(data).signature
        return signature

    def open_sealed(self, sealed: bytes) -> bytes:
        """Open something sealed to this principal's X25519 public key (an epoch key)."""
        try:
            plaintext: bytes = SealedBox(self._box_key).decrypt(sealed)
        except CryptoError as exc:
            raise DecryptionFailed(
                "A key sealed for you could not be opened: it is not for you, or was altered."
            ) from exc
        return plaintext


def verify_signature(public_sign: bytes, data: bytes, signature: bytes) -> None:
    """Check a sender's Ed25519 signature; raise DecryptionFailed rather than return a bool to ignore."""
    try:
        VerifyKey(public_sign).verify(data, signature)
    except CryptoError as exc:
        raise DecryptionFailed("The message signature does not match its sender: it was altered or forged.") from exc


@dataclass(frozen=True)
class MessageContext:
    """Where a message lives; bound into its ciphertext and its signature."""

    conversation_id: str
    epoch: int
    seq: int
    sender_id: str

    def associated_data(self) -> bytes:
        """Binds each ciphertext to its place: moved, reordered or re-attributed, it will not open."""
        return f"{self.conversation_id}\x00{self.epoch}\x00{self.seq}\x00{self.sender_id}".encode()


class EpochKey:
    """One conversation epoch's symmetric key. Callers never see nonces or the raw key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._aead = Aead(key)
        except CryptoError as exc:  # wrong type or length; keep nacl's exceptions inside this module
            raise ValueError(f"An epoch key must be exactly {Aead.KEY_SIZE} bytes.") from exc

    @classmethod
    def generate(cls) -> EpochKey:
        """A fresh random key for a new epoch."""
        return cls(secrets.token_bytes(Aead.KEY_SIZE))

    def seal(self, text: str, *, ctx: MessageContext) -> bytes:
        """Encrypt with a fresh random 24-byte nonce (prepended); ctx goes in as associated data."""
        return bytes(self._aead.encrypt(text.encode(), ctx.associated_data()))

    def open(self, sealed: bytes, *, ctx: MessageContext) -> str:
        """Decrypt a message sealed with the same key and the same context, or raise DecryptionFailed."""
        message = f"Message {ctx.seq} could not be opened: it was altered, moved or is not for this reader."
        # pynacl 1.6 raises a bare cffi ValueError (not CryptoError) for input shorter than nonce + tag.
        if len(sealed) < _MIN_SEALED_BYTES:
            raise DecryptionFailed(message)
        try:
            return self._aead.decrypt(sealed, ctx.associated_data()).decode()
        except (CryptoError, UnicodeDecodeError) as exc:
            raise DecryptionFailed(message) from exc

    def wrap_for(self, recipient_box_public: bytes) -> bytes:
        """Seal this key to one reader's X25519 public key: one wrapped copy per reader."""
        try:
            recipient = PublicKey(recipient_box_public)
        except CryptoError as exc:
            raise ValueError("A recipient box public key must be exactly 32 bytes.") from exc
        return bytes(SealedBox(recipient).encrypt(bytes(self._aead)))

    @classmethod
    def unwrap(cls, wrapped: bytes, bundle: KeyBundle) -> EpochKey:
        """Recover an epoch key sealed to the bundle's owner, or raise DecryptionFailed."""
        key = bundle.open_sealed(wrapped)
        if len(key) != Aead.KEY_SIZE:
            raise DecryptionFailed("A conversation key sealed for you is malformed and could not be used.")
        return cls(key)


def signed_payload(ctx: MessageContext, sealed: bytes) -> bytes:
    """What a sender signs: the message's place and its ciphertext, so neither can be swapped."""
    return ctx.associated_data() + b"\x00" + sealed
