"""The arithmetic of secure aggregation (training/secagg.py): Shamir sharing, the mask generator, key
agreement, share sealing and the fixed-point code of an update. Sans-IO, numpy and `cryptography` only.

- **Shamir** t-of-n sharing of 32-byte secrets over the prime field GF(2^521 - 1); share ``x`` values are
  1..n (a participant's place in the round's sorted list, plus one).
- **Masks**: AES-256 in counter mode (a cryptographic generator, ~1 GB/s) keyed by a 32-byte seed gives
  the uint64 words a mask adds; masks and updates add modulo 2^64 (numpy's uint64 wraps).
- **Keys**: X25519 agreement, HKDF-SHA256 with a context string naming the run, round and purpose.
- **Fixed point**: a client sends ``round(n * delta * 2^FRACTION_BITS)`` as int64 (two's complement in
  uint64), ``n`` its example count: the sum of the clients' words, divided by the sum of their counts,
  is FedAvg's weighted mean delta, exact to 2^-25 per coordinate.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PRIME = 2**521 - 1  # a Mersenne prime: every 32-byte secret is a field element
SHARE_BYTES = 66  # 521 bits
SECRET_BYTES = 32
FRACTION_BITS = 24


class SecAggError(ValueError):
    """A secure-aggregation step refused: what was wrong, for the round's record."""


# ----------------------------------------------------------------------------- Shamir
def split(secret: bytes, n: int, t: int) -> list[bytes]:
    """``n`` shares of ``secret`` (x = 1..n), any ``t`` of which give it back; fewer tell nothing."""
    if not 1 <= t <= n:
        raise SecAggError(f"threshold {t} must be in 1..{n}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    out = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        out.append(y.to_bytes(SHARE_BYTES, "big"))
    return out


def combine(shares: dict[int, bytes]) -> bytes:
    """The secret from shares ``{x: share}`` (Lagrange at 0); at least the threshold of them."""
    if not shares:
        raise SecAggError("no shares to combine")
    xs = list(shares)
    if len(set(xs)) != len(xs) or any(not 1 <= x < PRIME for x in xs):
        raise SecAggError("bad share indices")
    total = 0
    for xi in xs:
        yi = int.from_bytes(shares[xi], "big")
        num, den = 1, 1
        for xj in xs:
            if xj != xi:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    if total >= 2 ** (8 * SECRET_BYTES):
        raise SecAggError("the shares do not combine to a secret (a bad share)")
    return total.to_bytes(SECRET_BYTES, "big")


# ----------------------------------------------------------------------------- masks and keys
def mask(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random uint64 words from a 32-byte seed (AES-256-CTR keystream)."""
    enc = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor()
    return np.frombuffer(enc.update(bytes(8 * size)), dtype="<u8").copy()


def derive(shared: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(shared)


def new_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(key: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    """A 32-byte key both ends derive: X25519 of one's private key and the other's public key."""
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # a low-order point gives all zeros
        raise SecAggError(f"bad public key: {exc}") from None
    return derive(shared, context)


def seal(key: bytes, nonce: int, plain: bytes, aad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce.to_bytes(12, "big"), plain, aad)


def unseal(key: bytes, nonce: int, sealed: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce.to_bytes(12, "big"), sealed, aad)
    except InvalidTag:
        raise SecAggError("a share does not open (sealed for another node, or altered)") from None


# ----------------------------------------------------------------------------- fixed point
def encode(delta: np.ndarray, num_examples: int, clients: int) -> np.ndarray:
    """``round(n * delta * 2^F)`` as uint64 words; SecAggError if the sum of ``clients`` such words could overflow."""
    scaled = np.rint(np.asarray(delta, np.float64) * float(num_examples) * 2.0**FRACTION_BITS)
    limit = float(2**62 // max(1, clients))
    if scaled.size and not float(np.max(np.abs(scaled))) < limit:
        big = float(np.max(np.abs(delta)))
        raise SecAggError(f"update too large for secure aggregation's fixed-point range (|delta| {big:.3g})")
    return scaled.astype(np.int64).view(np.uint64)


def decode(total: np.ndarray, num_examples: int) -> np.ndarray:
    """The weighted mean delta from the unmasked sum of the clients' words and their summed counts."""
    if num_examples <= 0:
        raise SecAggError("no examples in the aggregate")
    return total.view(np.int64).astype(np.float64) / (float(num_examples) * 2.0**FRACTION_BITS)
