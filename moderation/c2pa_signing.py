"""Optional C2PA Content Credentials: a signed manifest saying "created by an AI model" inside the PNG.

Needs the `c2pa-python` package (the `c2pa` extra) and an operator's certificate chain + private key in PEM.
Signing and verification run offline: no timestamp authority, no OCSP, no remote manifests.

C2PA refuses self-signed signing certificates. The leaf must be issued by a CA, with CA:false, the
digitalSignature key usage and an extended key usage C2PA accepts (emailProtection or documentSigning, for
instance). `check_credentials` says which of these is missing before the first image is signed.

Verification reports a manifest as "Trusted" when its chain ends in a trust anchor given to `read_c2pa`
(the operator's own root), "Valid" when signature and hashes check out but the signer is not trusted, and
"Invalid" when the image or manifest was altered after signing.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation import ModerationError

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
AI_SOURCE_TYPES = frozenset(
    {AI_SOURCE_TYPE, "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"}
)
JOB_ASSERTION = "imagine.job"

# Extended key usages the C2PA trust model accepts for claim signing (dotted OID -> name).
_C2PA_EKUS = {
    "1.3.6.1.5.5.7.3.4": "emailProtection",
    "1.3.6.1.5.5.7.3.36": "documentSigning",
    "1.3.6.1.4.1.311.76.59.1.9": "Microsoft C2PA signing",
    "1.3.6.1.4.1.62558.2.1": "c2pa-kp-claimSigning",
}
_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
_EC_CURVES = {"es256": "secp256r1", "es384": "secp384r1", "es512": "secp521r1"}
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


class SigningError(ModerationError):
    """C2PA signing is misconfigured or failed; the message says what to fix."""


class C2paUnavailable(SigningError):
    """The c2pa-python package (or its native library) cannot be loaded here."""


@functools.cache
def _c2pa() -> Any:
    try:
        return importlib.import_module("c2pa")
    except ImportError as exc:
        raise C2paUnavailable(
            f"C2PA signing needs the c2pa-python package: pip install 'imagine[c2pa]' ({exc})"
        ) from exc
    except OSError as exc:  # the bundled native library failed to load
        raise C2paUnavailable(f"c2pa-python is installed but its native library does not load: {exc}") from exc


def unavailable_reason() -> str | None:
    """None when C2PA signing and reading work here, otherwise why not."""
    try:
        _c2pa()
    except C2paUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True, repr=False)
class C2paCredentials:
    """A PEM certificate chain (leaf first, then intermediates; the root may follow) and the leaf's PEM key."""

    cert_chain: bytes
    private_key: bytes
    algorithm: str = "es256"

    def __repr__(self) -> str:  # never print the key
        return f"C2paCredentials(algorithm={self.algorithm!r}, cert_chain=<{len(self.cert_chain)} bytes>, key=<hidden>)"

    @classmethod
    def from_files(cls, cert_chain: Path, private_key: Path, *, algorithm: str = "es256") -> C2paCredentials:
        try:
            return cls(cert_chain.read_bytes(), private_key.read_bytes(), algorithm)
        except OSError as exc:
            raise SigningError(f"cannot read C2PA credentials: {exc}") from exc


def check_credentials(credentials: C2paCredentials) -> None:
    """Raise SigningError, with what to fix, unless C2PA will accept this chain and key."""
    # Imported here so that reading provenance never needs cryptography (the c2pa extra brings it).
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if credentials.algorithm not in _ALGORITHMS:
        raise SigningError(
            f"C2PA signing algorithm must be one of {', '.join(_ALGORITHMS)}, got {credentials.algorithm!r}"
        )
    try:
        chain = x509.load_pem_x509_certificates(credentials.cert_chain)
    except ValueError as exc:
        raise SigningError(f"the C2PA certificate chain is not PEM certificates: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(credentials.private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"the C2PA private key is not an unencrypted PEM private key: {exc}") from exc
    leaf = chain[0]
    now = datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise SigningError(
            f"the C2PA signing certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d} to "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now"
        )
    if leaf.issuer == leaf.subject:
        raise SigningError(
            "the C2PA signing certificate is self-signed, which C2PA refuses: issue a leaf certificate from your "
            "own CA (CA:false, digitalSignature, emailProtection EKU) and list it first in the chain"
        )
    try:
        is_ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise SigningError("the C2PA signing certificate is a CA certificate (CA:true); sign with a CA:false leaf")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise SigningError("the C2PA signing certificate needs the digitalSignature key usage")
    try:
        ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    if not {eku.dotted_string for eku in ekus} & set(_C2PA_EKUS):
        raise SigningError(
            "the C2PA signing certificate needs an extended key usage C2PA accepts: " + ", ".join(_C2PA_EKUS.values())
        )
    public = key.public_key()
    if public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != (
        leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ):
        raise SigningError("the C2PA private key does not belong to the first certificate of the chain")
    algorithm = credentials.algorithm
    curve = _EC_CURVES.get(algorithm)
    if curve is not None and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve):
        raise SigningError(f"{algorithm} needs an EC key on {curve}")
    if algorithm.startswith("ps") and not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError(f"{algorithm} needs an RSA key")
    if algorithm == "ed25519" and not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError("ed25519 needs an Ed25519 key")


class C2paSigner:
    """Signs PNGs with a C2PA manifest: a c2pa.created action with the trainedAlgorithmicMedia source type,
    and an `imagine.job` assertion with the job id and model. Safe to share between threads."""

    def __init__(self, credentials: C2paCredentials, *, generator: str = "imagine", version: str = "0") -> None:
        check_credentials(credentials)
        self._c2pa = _c2pa()
        self._credentials = credentials
        self.generator = generator
        self.version = version

    @classmethod
    def from_files(
        cls, cert_chain: Path, private_key: Path, *, algorithm: str = "es256", generator: str = "imagine"
    ) -> C2paSigner:
        """A signer from PEM files; raises SigningError (C2paUnavailable without c2pa-python) saying what to fix."""
        return cls(C2paCredentials.from_files(cert_chain, private_key, algorithm=algorithm), generator=generator)

    def sign(self, png: bytes, *, job_id: str, model: str) -> bytes:
        """`png` with an embedded, signed manifest. Sign last: any later change to the file invalidates it."""
        c2pa = self._c2pa
        manifest = {
            "claim_generator_info": [{"name": self.generator, "version": self.version}],
            "title": f"{job_id}.png",
            "format": "image/png",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": AI_SOURCE_TYPE,
                                "softwareAgent": {"name": self.generator, "version": self.version},
                            }
                        ]
                    },
                },
                {"label": JOB_ASSERTION, "data": {"job_id": job_id, "model": model}},
            ],
        }
        credentials = self._credentials
        try:
            info = c2pa.C2paSignerInfo(credentials.algorithm, credentials.cert_chain, credentials.private_key, None)
            out = io.BytesIO()
            with (
                c2pa.Context.from_dict({**_OFFLINE, "builder": {"thumbnail": {"enabled": False}}}) as context,
                c2pa.Signer.from_info(info) as signer,
                c2pa.Builder(manifest, context=context) as builder,
            ):
                builder.sign(signer, "image/png", io.BytesIO(png), out)
        except c2pa.C2paError as exc:
            raise SigningError(f"C2PA signing failed: {exc}") from exc
        return out.getvalue()


@dataclass(frozen=True)
class C2paReading:
    state: str  # "Trusted", "Valid" (intact, signer not trusted) or "Invalid"
    ai_generated: bool  # an action declares a trainedAlgorithmicMedia source type
    job_id: str | None = None
    model: str | None = None
    generator: str | None = None
    signer: str | None = None  # certificate common name
    issuer: str | None = None
    failures: list[str] = field(default_factory=list)  # validation failure codes, e.g. "assertion.dataHash.mismatch"

    @property
    def intact(self) -> bool:
        return self.state in ("Valid", "Trusted")


def read_c2pa(data: bytes, mime: str, *, trust_anchors: str | None = None) -> C2paReading | None:
    """The active C2PA manifest of an image, or None when it carries none (or C2PA reading is unavailable).

    `trust_anchors` are PEM root certificates to trust on top of the SDK's built-in list (the operator's CA).
    """
    try:
        c2pa = _c2pa()
    except C2paUnavailable:
        return None
    settings: dict[str, Any] = dict(_OFFLINE)
    if trust_anchors:
        settings["trust"] = {"user_anchors": trust_anchors}
    try:
        with c2pa.Context.from_dict(settings) as context:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context)
            if reader is None:
                return None
            with reader:
                manifest = reader.get_active_manifest() or {}
                state = str(reader.get_validation_state() or "Invalid")
                results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        return C2paReading(state="Invalid", ai_generated=False, failures=[f"unreadable manifest: {exc}"])
    failures = [str(item.get("code")) for item in results.get("activeManifest", {}).get("failure", [])]
    job: dict[str, Any] = {}
    ai_generated = False
    for assertion in manifest.get("assertions", []):
        label = str(assertion.get("label", ""))
        body = assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            ai_generated |= any(a.get("digitalSourceType") in AI_SOURCE_TYPES for a in body.get("actions", []))
        elif label == JOB_ASSERTION:
            job = body
    generators = manifest.get("claim_generator_info") or [{}]
    signature = manifest.get("signature_info") or {}
    return C2paReading(
        state=state,
        ai_generated=ai_generated,
        job_id=_str_or_none(job.get("job_id")),
        model=_str_or_none(job.get("model")),
        generator=_str_or_none(generators[0].get("name")),
        signer=_str_or_none(signature.get("common_name")),
        issuer=_str_or_none(signature.get("issuer")),
        failures=failures,
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
