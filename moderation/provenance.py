"""Provenance marks on generated images, and reading them back from PNG, JPEG or WebP files.

`mark` layers, on top of the engine's PNG text chunks (prompt, seed, model, an "ai_generated" statement):

- XMP (PNG iTXt "XML:com.adobe.xmp") with the IPTC DigitalSourceType trainedAlgorithmicMedia, the model
  (Iptc4xmpExt:AISystemUsed), the generator (xmp:CreatorTool) and the job id (imagine:JobId).
- An invisible watermark (`moderation.watermark`) carrying a short id: the first 8 hex digits of the job id.
  It survives JPEG re-encoding and metadata stripping; images under 256 px a side are too small to carry it.
- Optionally a signed C2PA manifest (`moderation.c2pa_signing`), applied last because it hashes the file.

`verify` looks for each of these and claims only imagine's own marks: the XMP must declare an AI source type
and carry imagine's job id (its own namespace), the PNG text must name imagine as the software, the watermark
must pass its magic, CRC and vote margin, and a C2PA manifest must be intact, declare an AI source type and
carry imagine's job assertion. Another generator's AI-generated XMP or C2PA manifest (Adobe Firefly's, say)
is reported as such, never as imagine's.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from moderation import ModerationError, watermark
from moderation.c2pa_signing import AI_SOURCE_TYPE, AI_SOURCE_TYPES, C2paSigner, read_c2pa, unavailable_reason

log = logging.getLogger(__name__)

XMP_KEY = "XML:com.adobe.xmp"
AI_TEXT_KEY = "ai_generated"  # the engine's plain-language statement (engine/metadata.py)
SOFTWARE = "imagine"  # the engine's "Software" text chunk (engine/metadata.py SOFTWARE)
UNNAMED_TOOL = "a tool that does not name itself"
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "imagine": "urn:imagine:xmp:1#",
}
_XMP_FIELDS = {  # report key -> (namespace prefix, property)
    "digital_source_type": ("Iptc4xmpExt", "DigitalSourceType"),
    "ai_system": ("Iptc4xmpExt", "AISystemUsed"),
    "creator_tool": ("xmp", "CreatorTool"),
    "job_id": ("imagine", "JobId"),
}
_MAX_XMP = 1 << 20
_MIMES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
SOURCES = ("xmp", "png-text", "watermark", "c2pa")


class ProvenanceError(ModerationError, ValueError):
    """The data is not an image this module can mark or read."""


@dataclass(frozen=True)
class ProvenanceReport:
    marked: bool
    found: list[str]  # a subset of SOURCES, in that order
    job_id: str | None = None  # from XMP or C2PA; the watermark alone gives only `details["watermark_id"]`
    details: dict[str, Any] = field(default_factory=dict)
    # AI-generation marks written by another tool: source ("xmp", "c2pa") -> that tool's name. Never in `found`.
    foreign: dict[str, str] = field(default_factory=dict)


def watermark_id(job_id: str) -> bytes:
    """The 4 bytes the watermark carries for a job: the first 8 hex digits of the id (uuid4 hex ids), so an
    operator can find the job by prefix; ids that do not start with 8 hex digits use a SHA-256 prefix."""
    head = job_id[:8]
    if len(head) == 8 and all(c in string.hexdigits for c in head):
        return bytes.fromhex(head)
    return hashlib.sha256(job_id.encode()).digest()[: watermark.PAYLOAD_BYTES]


def xmp_packet(*, job_id: str, model: str, generator: str) -> str:
    """An XMP packet declaring the image AI-generated (IPTC trainedAlgorithmicMedia), by whom and in which job."""

    def attr(value: str) -> str:
        return escape(value, {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f' <rdf:RDF xmlns:rdf="{_NS["rdf"]}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{_NS["Iptc4xmpExt"]}"\n'
        f'    xmlns:xmp="{_NS["xmp"]}"\n'
        f'    xmlns:imagine="{_NS["imagine"]}"\n'
        f'   Iptc4xmpExt:DigitalSourceType="{AI_SOURCE_TYPE}"\n'
        f'   Iptc4xmpExt:AISystemUsed="{attr(model)}"\n'
        f'   xmp:CreatorTool="{attr(generator)}"\n'
        f'   imagine:JobId="{attr(job_id)}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def mark(png: bytes, *, job_id: str, model: str, generator: str = "imagine", signer: C2paSigner | None = None) -> bytes:
    """The engine's PNG with provenance added: its text chunks kept, XMP added (replacing any old XMP), the
    invisible watermark embedded when the image is large enough, and a C2PA manifest when `signer` is given."""
    try:
        with Image.open(io.BytesIO(png)) as opened:
            if not isinstance(opened, PngImagePlugin.PngImageFile):
                raise ProvenanceError(f"mark() takes a PNG, got {opened.format}")
            opened.load()
            text = {str(key): str(value) for key, value in opened.text.items()}
            icc_profile = opened.info.get("icc_profile")
            image: Image.Image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ProvenanceError(f"mark() takes a PNG, got data PIL cannot read ({exc})") from exc

    if watermark.fits(image):
        try:
            image = watermark.embed(image, watermark_id(job_id))
        except watermark.WatermarkError as exc:
            log.info("job %s: no invisible watermark: %s", job_id, exc)
    else:
        log.debug("job %s: %dx%d is too small for the invisible watermark", job_id, *image.size)

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if key != XMP_KEY:
            info.add_text(key, value)  # tEXt when Latin-1, iTXt otherwise, as the engine wrote them
    info.add_itxt(XMP_KEY, xmp_packet(job_id=job_id, model=model, generator=generator))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, icc_profile=icc_profile)
    marked = buffer.getvalue()
    if signer is not None:
        marked = signer.sign(marked, job_id=job_id, model=model)
    return marked


def verify(data: bytes, *, trust_anchors: str | None = None) -> ProvenanceReport:
    """Which provenance marks a PNG, JPEG or WebP file carries. Raises ProvenanceError if it is not an image.

    `trust_anchors`: PEM root certificates whose C2PA signatures count as trusted (the operator's CA).
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image_format = opened.format or "unknown"
            xmp_raw = opened.info.get("xmp")
            text = (
                {str(k): str(v) for k, v in opened.text.items()}
                if isinstance(opened, PngImagePlugin.PngImageFile)
                else {}
            )
            image: Image.Image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ProvenanceError(f"not an image that can be read: {exc}") from exc

    found: list[str] = []
    details: dict[str, Any] = {"format": image_format, "size": list(image.size)}
    job_id: str | None = None

    foreign: dict[str, str] = {}
    xmp = _read_xmp(xmp_raw if xmp_raw is not None else text.get(XMP_KEY))
    if xmp is not None:
        details["xmp"] = xmp
        if xmp.get("digital_source_type") in AI_SOURCE_TYPES:
            # imagine:JobId lives in imagine's own namespace and `mark` always writes it; the source type alone
            # is what every AI generator writes.
            if xmp.get("job_id"):
                found.append("xmp")
                job_id = xmp["job_id"]
            else:
                foreign["xmp"] = xmp.get("creator_tool") or UNNAMED_TOOL

    if AI_TEXT_KEY in text and text.get("Software") == SOFTWARE:
        found.append("png-text")
        details["png_text"] = {key: text[key] for key in (AI_TEXT_KEY, "model", "seed", "Software") if key in text}

    if watermark.fits(image):
        payload = watermark.extract(image)
        if payload is not None:
            found.append("watermark")
            details["watermark_id"] = payload.hex()
    else:
        details["watermark_skipped"] = (
            f"the image is under {watermark.MIN_SIDE} px on a side, too small to carry it "
            "(imagine leaves images that small without one)"
        )

    mime = _MIMES.get(image_format)
    reason = unavailable_reason()
    if reason is not None:
        details["c2pa_skipped"] = reason
    elif mime is None:
        details["c2pa_skipped"] = f"C2PA is read from PNG, JPEG and WebP files, not {image_format}"
    else:
        reading = read_c2pa(data, mime, trust_anchors=trust_anchors)
        if reading is not None:
            details["c2pa"] = {
                "state": reading.state,
                "ai_generated": reading.ai_generated,
                "signer": reading.signer,
                "issuer": reading.issuer,
                "generator": reading.generator,
                "failures": reading.failures,
            }
            if reading.intact and reading.ai_generated:
                if reading.job_id is not None:  # only imagine's signer writes the imagine.job assertion
                    found.append("c2pa")
                    job_id = job_id or reading.job_id
                else:
                    foreign["c2pa"] = reading.generator or UNNAMED_TOOL

    if job_id is not None and "watermark_id" in details:
        details["watermark_matches_job"] = watermark_id(job_id).hex() == details["watermark_id"]
    return ProvenanceReport(marked=bool(found), found=found, job_id=job_id, details=details, foreign=foreign)


def describe(report: ProvenanceReport) -> str:
    """Plain text for `imagine provenance verify FILE`."""
    details = report.details
    others = sorted(set(report.foreign.values()))
    if report.marked:
        lines = [f"Marked as AI-generated by imagine: {', '.join(report.found)}."]
        if others:
            lines.append(f"  also marked as AI-generated by another tool ({', '.join(others)})")
    elif others:
        lines = [f"Not imagine's: marked as AI-generated by another tool ({', '.join(others)}), not by imagine."]
    else:
        looked = ["XMP", "PNG text"]
        if "watermark_skipped" not in details:
            looked.append("the invisible watermark")
        if "c2pa_skipped" not in details:
            looked.append("C2PA")
        lines = [f"No AI-generation mark found (looked for {', '.join(looked[:-1])} and {looked[-1]})."]
    if report.job_id:
        lines.append(f"  job id: {report.job_id}")
    xmp = details.get("xmp")
    if ("xmp" in report.found or "xmp" in report.foreign) and isinstance(xmp, dict):
        lines.append(
            f"  XMP: IPTC digital source type {xmp.get('digital_source_type', '').rsplit('/', 1)[-1]}, "
            f"model {xmp.get('ai_system') or '?'}, made with {xmp.get('creator_tool') or '?'}"
            + ("" if "xmp" in report.found else " (no imagine job id: not imagine's)")
        )
    png_text = details.get("png_text")
    if "png-text" in report.found and isinstance(png_text, dict):
        lines.append(f"  PNG text: {png_text.get(AI_TEXT_KEY)}")
    if "watermark_id" in details:
        match = details.get("watermark_matches_job")
        note = "" if match is None else (" (matches the job id)" if match else " (does NOT match the job id above)")
        lines.append(f"  invisible watermark: id {details['watermark_id']}, the job id's first 8 hex digits{note}")
    elif "watermark_skipped" in details:
        lines.append(f"  invisible watermark: not checked: {details['watermark_skipped']}")
    c2pa = details.get("c2pa")
    if isinstance(c2pa, dict):
        state = c2pa.get("state")
        meaning = {
            "Trusted": "valid, signed by a trusted certificate",
            "Valid": "intact, but the signer is not in the trust list",
        }.get(str(state), "INVALID (altered after signing, or damaged)")
        signer = c2pa.get("signer") or "?"
        issuer = c2pa.get("issuer") or "?"
        lines.append(f"  C2PA: {meaning}; signer {signer!r} issued by {issuer!r}")
        if not c2pa.get("ai_generated"):
            lines.append("  C2PA: the manifest does not declare the image AI-generated")
        if "c2pa" in report.foreign:
            lines.append(f"  C2PA: the manifest was made by {report.foreign['c2pa']}, not imagine (no imagine job)")
        if c2pa.get("failures"):
            lines.append(f"  C2PA failures: {', '.join(c2pa['failures'])}")
    elif "c2pa_skipped" in details:
        lines.append(f"  C2PA: not checked ({details['c2pa_skipped']})")
    return "\n".join(lines)


def _read_xmp(raw: bytes | str | None) -> dict[str, str] | None:
    """The fields of interest from an XMP packet, in attribute or element form; None when there is no packet."""
    if raw is None:
        return None
    packet = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(packet) > _MAX_XMP or re.search(rb"<!(DOCTYPE|ENTITY)", packet):
        return {"error": "XMP packet refused (too large, or declares entities)"}
    packet = packet.strip(b"\x00 \t\r\n")
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as exc:
        return {"error": f"XMP packet does not parse: {exc}"}
    fields: dict[str, str] = {}
    rdf_resource = f"{{{_NS['rdf']}}}resource"
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for key, (prefix, name) in _XMP_FIELDS.items():
            qualified = f"{{{_NS[prefix]}}}{name}"
            value = description.get(qualified)
            if value is None:
                element = description.find(qualified)
                if element is not None:
                    value = element.get(rdf_resource) or (element.text or "").strip()
            if value and key not in fields:
                fields[key] = value
    return fields
