"""Signed evidence: who may write a record that gates production.

Anyone who can push ``refs/notes/promote`` can write a note, and branch protection does not cover notes refs. So
with ``evidence.trusted_keys`` set, a record counts only with an Ed25519 signature, over its canonical content,
by one of those keys; the workers that run promotions hold the private key (by reference: an environment
variable or a Prefect Secret block), nobody else needs it, and everyone can check a record with the public keys
in the pipeline file. Pure functions over bytes and dicts; the note store is :mod:`tasks.evidence`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rules.errors import RefusedError

# What a signature covers starts with this, so a signature made for anything else never verifies here.
DOMAIN = b"gitops-promote evidence v1\n"
SIGNATURE_FIELD = "sig"
_PREFIX = "ed25519:"
_MAX_KEY_TEXT = 4096


class SigningKeyError(RefusedError, ValueError):
    """A signing or trusted key is missing or not an Ed25519 key."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(text: str) -> Ed25519PublicKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... comment``), as ``ssh-keygen -t ed25519`` writes it."""
    if not isinstance(text, str) or len(text) > _MAX_KEY_TEXT or not text.strip().startswith("ssh-ed25519 "):
        raise SigningKeyError(
            "a trusted key must be an OpenSSH ed25519 public key line ('ssh-ed25519 AAAA...'; "
            "make one with: ssh-keygen -t ed25519 -f promote-evidence)"
        )
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError("a trusted key is not a valid 'ssh-ed25519 AAAA...' public key line") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("a trusted key must be an ed25519 key")
    return key


def load_private_key(data: str) -> Ed25519PrivateKey:
    """An Ed25519 private key, OpenSSH (``ssh-keygen -t ed25519``, no passphrase) or PKCS#8 PEM. The error never
    repeats the text: it is a secret."""
    raw = data.strip().encode()
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            key = loader(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if isinstance(key, Ed25519PrivateKey):
            return key
        raise SigningKeyError("the evidence signing key must be an ed25519 key (ssh-keygen -t ed25519)")
    raise SigningKeyError(
        "the evidence signing key is not an unencrypted ed25519 private key in OpenSSH or PEM form "
        "(make one with: ssh-keygen -t ed25519 -N '' -f promote-evidence)"
    )


def canonical(fields: Mapping[str, Any]) -> bytes:
    """What a signature covers: the domain line, then the record's fields but the signature, as sorted compact
    JSON (ASCII only, so no two encodings of one record exist)."""
    content = {k: v for k, v in fields.items() if k != SIGNATURE_FIELD}
    return DOMAIN + json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(fields: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """``ed25519:<key id>:<base64 signature>``."""
    signature = base64.b64encode(key.sign(canonical(fields))).decode()
    return f"{_PREFIX}{key_id(key.public_key())}:{signature}"


@dataclass(frozen=True)
class Trust:
    """The keys whose signatures make a record count; empty: every record counts (no signing configured)."""

    keys: tuple[Ed25519PublicKey, ...] = ()

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> Trust:
        return cls(tuple(load_public_key(line) for line in lines))

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def signed_by(self, fields: Mapping[str, Any]) -> str | None:
        """The id of the trusted key that signed these fields, or None (unsigned, malformed, foreign, altered)."""
        signature = fields.get(SIGNATURE_FIELD)
        if not isinstance(signature, str) or not signature.startswith(_PREFIX) or len(signature) > 200:
            return None
        wanted_id, _, encoded = signature[len(_PREFIX) :].partition(":")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None
        message = canonical(fields)
        for key in self.keys:
            if key_id(key) != wanted_id:
                continue
            try:
                key.verify(raw, message)
            except InvalidSignature:
                return None
            return wanted_id
        return None

    def counts_key(self, public: Ed25519PublicKey) -> bool:
        return key_id(public) in {key_id(key) for key in self.keys}

    def counts(self, fields: Mapping[str, Any]) -> bool:
        """Whether a record counts as evidence: always without trusted keys, else only when signed by one."""
        return not self.required or self.signed_by(fields) is not None


@dataclass(frozen=True)
class EvidencePolicy:
    """How a repository's evidence is written and read: the key that signs new records (None: unsigned) and
    the keys whose records count."""

    trust: Trust = Trust()
    signer: Ed25519PrivateKey | None = None

    def __repr__(self) -> str:  # the private key never reaches a log line or an exception
        return f"EvidencePolicy(trusted={len(self.trust.keys)}, signing={'yes' if self.signer else 'no'})"
