"""The private-key stand-ins the two signing passes hand to cryptography's
builders (:mod:`.signing`): they record the to-be-signed bytes on the first
pass and return the remote signature on the second. The private half lives
in Key Vault; everything but ``sign()`` refuses."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.utils import Buffer

from akv_issuer.pki.algorithms import CAPublicKey, SignatureAlgorithm
from akv_issuer.pki.errors import SignatureError


class FirstPassDone(Exception):
    """Ends the recording pass: no placeholder-signed object is ever built."""


class Recorder:
    def __init__(self, algorithm: SignatureAlgorithm) -> None:
        self.algorithm = algorithm
        self.tbs: bytes | None = None
        self.signature: bytes | None = None

    def sign(self, data: Buffer, hash_algorithm: object) -> bytes:
        expected = self.algorithm.hash_algorithm
        if not isinstance(hash_algorithm, type(expected)):
            raise SignatureError(f"the builder asked for a different hash than {self.algorithm}")
        self.tbs = bytes(data)
        if self.signature is None:
            raise FirstPassDone
        return self.signature


def _unsupported() -> TypeError:
    return TypeError("the private half of this key lives in Key Vault; only sign() is supported")


class _RemoteRSAKey(rsa.RSAPrivateKey):
    def __init__(self, public_key: rsa.RSAPublicKey, recorder: Recorder) -> None:
        self._public_key = public_key
        self._recorder = recorder

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        return self._recorder.sign(data, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise _unsupported()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _unsupported()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _unsupported()

    def __copy__(self) -> _RemoteRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _RemoteRSAKey:
        return self


class _RemoteECKey(ec.EllipticCurvePrivateKey):
    def __init__(self, public_key: ec.EllipticCurvePublicKey, recorder: Recorder) -> None:
        self._public_key = public_key
        self._recorder = recorder

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        return self._recorder.sign(data, algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise _unsupported()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _unsupported()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _unsupported()

    def __copy__(self) -> _RemoteECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _RemoteECKey:
        return self


RemoteKey = _RemoteRSAKey | _RemoteECKey


def remote_key(public_key: CAPublicKey, recorder: Recorder) -> RemoteKey:
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RemoteRSAKey(public_key, recorder)
    return _RemoteECKey(public_key, recorder)
