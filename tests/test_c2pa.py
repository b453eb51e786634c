"""C2PA signing with a throwaway CA -> leaf chain, offline, and verification of the signed PNG."""

from __future__ import annotations

import datetime
import importlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from engine.metadata import encode_png, read_png_metadata
from moderation.c2pa_signing import (
    AI_SOURCE_TYPE,
    C2paCredentials,
    C2paSigner,
    SigningError,
    check_credentials,
    read_c2pa,
    unavailable_reason,
)
from moderation.image_gate import synthetic_scene
from moderation.provenance import describe, mark, verify

REASON = unavailable_reason()
needs_c2pa = pytest.mark.skipif(REASON is not None, reason=f"C2PA unavailable: {REASON}")
JOB_ID = "5e1f0c2d3b4a59687766554433221100"


@dataclass(frozen=True)
class Pki:
    root_pem: bytes
    chain_pem: bytes  # leaf, then root
    key_pem: bytes
    root_key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagine tests"),
        ]
    )


def _usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_leaf(
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    ekus: list[x509.ObjectIdentifier] | None = None,
    subject: str = "imagine signer",
    days: int = 30,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=max(1, 1 - days)))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(signing=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    signing_key = key if issuer == _name(subject) else issuer_key  # issuer == subject: self-signed
    return builder.sign(signing_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A throwaway root CA and an ES256 (P-256) leaf: CA:false, digitalSignature, emailProtection."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("imagine test root"))
        .issuer_name(_name("imagine test root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=60))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf, leaf_key = make_leaf(root.subject, root_key, ekus=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    return Pki(_pem(root), _pem(leaf) + _pem(root), _key_pem(leaf_key), root_key)


@pytest.fixture(scope="module")
def credentials(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> C2paCredentials:
    directory = tmp_path_factory.mktemp("c2pa")
    (directory / "chain.pem").write_bytes(pki.chain_pem)
    (directory / "key.pem").write_bytes(pki.key_pem)
    return C2paCredentials.from_files(directory / "chain.pem", directory / "key.pem")


@pytest.fixture(scope="module")
def engine_png() -> bytes:
    return encode_png(
        synthetic_scene(512, seed=4),
        prompt="lighthouse at dusk",
        negative_prompt="",
        seed=7,
        model="stabilityai/sd-turbo",
        steps=1,
        guidance=0.0,
        width=512,
        height=512,
    )


@pytest.fixture(scope="module")
def signed(credentials: C2paCredentials, engine_png: bytes) -> bytes:
    return mark(engine_png, job_id=JOB_ID, model="stabilityai/sd-turbo", signer=C2paSigner(credentials))


@needs_c2pa
def test_a_signer_from_files_signs_an_already_marked_png(engine_png: bytes, pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem)
    (tmp_path / "key.pem").write_bytes(pki.key_pem)
    signer = C2paSigner.from_files(tmp_path / "chain.pem", tmp_path / "key.pem")
    signed = signer.sign(mark(engine_png, job_id=JOB_ID, model="m"), job_id=JOB_ID, model="m")
    report = verify(signed, trust_anchors=pki.root_pem.decode())
    assert report.found == ["xmp", "png-text", "watermark", "c2pa"]
    assert report.details["c2pa"]["state"] == "Trusted"


@needs_c2pa
def test_a_signed_png_verifies_as_trusted_with_the_operator_root(signed: bytes, pki: Pki) -> None:
    report = verify(signed, trust_anchors=pki.root_pem.decode())
    assert report.found == ["xmp", "png-text", "watermark", "c2pa"]
    assert report.job_id == JOB_ID
    c2pa = report.details["c2pa"]
    assert c2pa["state"] == "Trusted"
    assert c2pa["ai_generated"] is True
    assert c2pa["signer"] == "imagine signer"
    assert "signed by a trusted certificate" in describe(report)


@needs_c2pa
def test_without_the_root_the_manifest_is_intact_but_untrusted(signed: bytes) -> None:
    report = verify(signed)
    assert "c2pa" in report.found
    assert report.details["c2pa"]["state"] == "Valid"
    assert "signingCredential.untrusted" in report.details["c2pa"]["failures"]
    assert "not in the trust list" in describe(report)


@needs_c2pa
def test_the_manifest_declares_ai_generation_and_the_job(signed: bytes, engine_png: bytes) -> None:
    reading = read_c2pa(signed, "image/png")
    assert reading is not None
    assert reading.ai_generated
    assert (reading.job_id, reading.model, reading.generator) == (JOB_ID, "stabilityai/sd-turbo", "imagine")
    assert read_c2pa(engine_png, "image/png") is None
    before = read_png_metadata(engine_png)
    assert {key: read_png_metadata(signed)[key] for key in before} == before  # signing keeps the text chunks


def _replace_text_chunk(png: bytes, keyword: bytes, value: bytes) -> bytes:
    """`png` with one tEXt chunk's value replaced (and its CRC fixed), everything else byte for byte."""
    out, position = bytearray(png[:8]), 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        if kind == b"tEXt" and body.startswith(keyword + b"\x00"):
            body = keyword + b"\x00" + value
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        position += 12 + length
    return bytes(out)


@needs_c2pa
def test_an_altered_file_fails_c2pa_but_keeps_its_other_marks(signed: bytes, pki: Pki) -> None:
    altered = _replace_text_chunk(signed, b"seed", b"8")
    assert read_png_metadata(altered)["seed"] == "8"
    report = verify(altered, trust_anchors=pki.root_pem.decode())
    assert report.details["c2pa"]["state"] == "Invalid"
    assert "c2pa" not in report.found
    assert report.found == ["xmp", "png-text", "watermark"]
    assert "INVALID" in describe(report)


@needs_c2pa
def test_jpeg_reencoding_drops_c2pa_quietly(signed: bytes) -> None:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(signed)) as image:
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    report = verify(buffer.getvalue())
    assert report.found == ["watermark"]
    assert "c2pa" not in report.details


def sign_as_another_tool(png: bytes, credentials: C2paCredentials, generator: str) -> bytes:
    """`png` with an intact C2PA manifest declaring AI generation, as another generator writes it: its own claim
    generator and actions, and no `imagine.job` assertion."""
    c2pa: Any = importlib.import_module("c2pa")  # untyped
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "3"}],
        "title": "firefly.png",
        "format": "image/png",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": AI_SOURCE_TYPE,
                            "softwareAgent": {"name": generator, "version": "3"},
                        }
                    ]
                },
            }
        ],
    }
    info = c2pa.C2paSignerInfo(credentials.algorithm, credentials.cert_chain, credentials.private_key, None)
    out = io.BytesIO()
    offline = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    with (
        c2pa.Context.from_dict({**offline, "builder": {"thumbnail": {"enabled": False}}}) as context,
        c2pa.Signer.from_info(info) as signer,
        c2pa.Builder(manifest, context=context) as builder,
    ):
        builder.sign(signer, "image/png", io.BytesIO(png), out)
    return out.getvalue()


@needs_c2pa
def test_another_generators_c2pa_manifest_is_named_but_not_claimed(credentials: C2paCredentials, pki: Pki) -> None:
    buffer = io.BytesIO()
    synthetic_scene(512, seed=6).save(buffer, format="PNG")
    foreign = sign_as_another_tool(buffer.getvalue(), credentials, "Adobe Firefly")
    report = verify(foreign, trust_anchors=pki.root_pem.decode())
    assert report.details["c2pa"]["state"] == "Trusted"
    assert report.details["c2pa"]["ai_generated"] is True
    assert not report.marked
    assert report.found == []
    assert report.foreign == {"c2pa": "Adobe Firefly"}
    text = describe(report)
    assert text.startswith("Not imagine's: marked as AI-generated by another tool (Adobe Firefly), not by imagine.")
    assert "made by Adobe Firefly, not imagine" in text


def test_a_self_signed_certificate_is_refused_with_advice() -> None:
    unused_issuer_key = ec.generate_private_key(ec.SECP256R1())
    certificate, key = make_leaf(
        _name("imagine signer"), unused_issuer_key, ekus=[ExtendedKeyUsageOID.EMAIL_PROTECTION]
    )
    assert certificate.issuer == certificate.subject
    with pytest.raises(SigningError, match="self-signed"):
        check_credentials(C2paCredentials(_pem(certificate), _key_pem(key)))


def test_leaf_requirements_are_checked(pki: Pki) -> None:
    root = x509.load_pem_x509_certificate(pki.root_pem)
    cases = [
        (make_leaf(root.subject, pki.root_key, ekus=None), "extended key usage"),
        (make_leaf(root.subject, pki.root_key, ca=True, ekus=[ExtendedKeyUsageOID.EMAIL_PROTECTION]), "CA:true"),
        (make_leaf(root.subject, pki.root_key, ekus=[ExtendedKeyUsageOID.SERVER_AUTH]), "extended key usage"),
    ]
    for (certificate, key), message in cases:
        with pytest.raises(SigningError, match=message):
            check_credentials(C2paCredentials(_pem(certificate) + pki.root_pem, _key_pem(key)))


def test_a_key_that_does_not_match_the_leaf_is_refused(pki: Pki) -> None:
    other = _key_pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SigningError, match="does not belong"):
        check_credentials(C2paCredentials(pki.chain_pem, other))
    with pytest.raises(SigningError, match="es384 needs an EC key on secp384r1"):
        check_credentials(C2paCredentials(pki.chain_pem, pki.key_pem, algorithm="es384"))
    with pytest.raises(SigningError, match="one of"):
        check_credentials(C2paCredentials(pki.chain_pem, pki.key_pem, algorithm="rs256"))


def test_an_expired_leaf_is_refused(pki: Pki) -> None:
    root = x509.load_pem_x509_certificate(pki.root_pem)
    leaf, key = make_leaf(root.subject, pki.root_key, ekus=[ExtendedKeyUsageOID.EMAIL_PROTECTION], days=-2)
    with pytest.raises(SigningError, match="not now"):
        check_credentials(C2paCredentials(_pem(leaf) + pki.root_pem, _key_pem(key)))


def test_not_pem_is_refused(pki: Pki) -> None:
    with pytest.raises(SigningError, match="not PEM certificates"):
        check_credentials(C2paCredentials(b"", pki.key_pem))
    with pytest.raises(SigningError, match="not an unencrypted PEM private key"):
        check_credentials(C2paCredentials(pki.chain_pem, b"garbage"))


def test_credentials_never_show_the_key(credentials: C2paCredentials, pki: Pki) -> None:
    assert "PRIVATE" not in repr(credentials)
    assert credentials.private_key == pki.key_pem
    check_credentials(credentials)


def test_missing_credential_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="cannot read"):
        C2paCredentials.from_files(tmp_path / "chain.pem", tmp_path / "key.pem")
