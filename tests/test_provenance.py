"""Provenance: XMP + engine text chunks + invisible watermark on the engine's PNGs, read back from PNG, JPEG, WebP."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from engine.metadata import encode_png, read_png_metadata
from moderation.image_gate import synthetic_scene
from moderation.provenance import (
    XMP_KEY,
    ProvenanceError,
    describe,
    mark,
    verify,
    watermark_id,
    xmp_packet,
)

JOB_ID = "9f3c2a1b7d6e4f5a8b9c0d1e2f3a4b5c"
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def engine_png(size: int = 512, prompt: str = "a quiet valley at noon") -> bytes:
    return encode_png(
        synthetic_scene(size, seed=1),
        prompt=prompt,
        negative_prompt="",
        seed=42,
        model="stabilityai/sd-turbo",
        steps=1,
        guidance=0.0,
        width=size,
        height=size,
    )


def reencode(data: bytes, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buffer, format=format, **options)
    return buffer.getvalue()


def png_with_xmp(xmp: str, size: int = 64) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(XMP_KEY, xmp)
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def original() -> bytes:
    return engine_png(prompt="a quiet valley at noon, 山 ✨")


@pytest.fixture(scope="module")
def marked(original: bytes) -> bytes:
    return mark(original, job_id=JOB_ID, model="stabilityai/sd-turbo")


def test_mark_keeps_the_engine_text_chunks_and_adds_xmp(original: bytes, marked: bytes) -> None:
    before = read_png_metadata(original)
    after = read_png_metadata(marked)
    assert {key: after[key] for key in before} == before
    xmp = after[XMP_KEY]
    assert f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE}"' in xmp
    assert 'xmp:CreatorTool="imagine"' in xmp
    assert f'imagine:JobId="{JOB_ID}"' in xmp
    assert 'Iptc4xmpExt:AISystemUsed="stabilityai/sd-turbo"' in xmp


def test_a_marked_png_carries_every_mark(marked: bytes) -> None:
    report = verify(marked)
    assert report.marked
    assert report.found == ["xmp", "png-text", "watermark"]
    assert report.job_id == JOB_ID
    assert report.details["watermark_id"] == JOB_ID[:8]
    assert report.details["watermark_matches_job"] is True
    assert report.details["xmp"]["ai_system"] == "stabilityai/sd-turbo"


def test_the_watermark_outlives_jpeg_and_metadata_stripping(marked: bytes) -> None:
    report = verify(reencode(marked, "JPEG", quality=75))
    assert report.marked
    assert report.found == ["watermark"]
    assert report.job_id is None
    assert report.details["watermark_id"] == JOB_ID[:8]
    assert "job id's first 8 hex digits" in describe(report)


def test_webp_with_xmp_is_read(marked: bytes) -> None:
    with Image.open(io.BytesIO(marked)) as image:
        xmp = image.info["xmp"]
    report = verify(reencode(marked, "WEBP", quality=90, xmp=xmp))
    assert report.found == ["xmp", "watermark"]
    assert report.job_id == JOB_ID


def test_jpeg_with_xmp_is_read(marked: bytes) -> None:
    with Image.open(io.BytesIO(marked)) as image:
        xmp = image.info["xmp"]
    report = verify(reencode(marked, "JPEG", quality=90, xmp=xmp))
    assert report.found == ["xmp", "watermark"]


def test_small_images_get_text_marks_but_no_watermark() -> None:
    report = verify(mark(engine_png(64), job_id="job-7", model="tiny"))
    assert report.found == ["xmp", "png-text"]
    assert report.job_id == "job-7"
    assert "watermark_id" not in report.details
    assert "not checked" in describe(report)


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_unmarked_images_are_not_claimed(format: str) -> None:
    for image in (synthetic_scene(512, seed=9), Image.new("RGB", (300, 300), (250, 250, 250))):
        buffer = io.BytesIO()
        image.save(buffer, format=format)
        report = verify(buffer.getvalue())
        assert not report.marked
        assert report.found == []
        assert report.job_id is None
        assert describe(report).startswith("No AI-generation mark found")


def test_xmp_must_declare_an_ai_source_type() -> None:
    camera = xmp_packet(job_id="x", model="m", generator="g").replace(
        AI_SOURCE, "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    )
    report = verify(png_with_xmp(camera))
    assert not report.marked
    assert report.details["xmp"]["digital_source_type"].endswith("digitalCapture")


def test_xmp_written_by_other_tools_in_element_form_is_understood() -> None:
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        f"<Iptc4xmpExt:DigitalSourceType>{AI_SOURCE}</Iptc4xmpExt:DigitalSourceType>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    report = verify(png_with_xmp(xmp))
    assert report.found == ["xmp"]
    assert report.job_id is None


def test_hostile_xmp_is_refused_not_parsed() -> None:
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>'
    report = verify(png_with_xmp(bomb))
    assert not report.marked
    assert "refused" in report.details["xmp"]["error"]
    assert not verify(png_with_xmp("<not xml")).marked


def test_awkward_values_survive_the_xmp_round_trip() -> None:
    model = 'owner/model "v2" <beta> & co'
    report = verify(mark(engine_png(64), job_id="a&b", model=model, generator="imagine-test"))
    assert report.details["xmp"]["ai_system"] == model
    assert report.details["xmp"]["creator_tool"] == "imagine-test"
    assert report.job_id == "a&b"


def test_marking_twice_leaves_one_xmp_packet(marked: bytes) -> None:
    again = mark(marked, job_id="00000000aaaa", model="other")
    with Image.open(io.BytesIO(again)) as image:
        assert isinstance(image, PngImagePlugin.PngImageFile)
        assert list(image.text).count(XMP_KEY) == 1
    assert verify(again).job_id == "00000000aaaa"


def test_mark_takes_only_pngs_and_verify_only_images(marked: bytes) -> None:
    with pytest.raises(ProvenanceError, match="takes a PNG"):
        mark(reencode(marked, "JPEG"), job_id=JOB_ID, model="m")
    with pytest.raises(ProvenanceError, match="takes a PNG"):
        mark(b"nope", job_id=JOB_ID, model="m")
    with pytest.raises(ProvenanceError, match="not an image"):
        verify(b"nope")


def test_watermark_ids_are_the_job_id_prefix_or_a_hash() -> None:
    assert watermark_id(JOB_ID) == bytes.fromhex(JOB_ID[:8])
    assert len(watermark_id("job-7")) == 4
    assert watermark_id("job-7") != watermark_id("job-8")


def test_describe_lists_what_was_found(marked: bytes) -> None:
    text = describe(verify(marked))
    assert text.startswith("Marked as AI-generated: xmp, png-text, watermark.")
    assert JOB_ID in text
    assert "trainedAlgorithmicMedia" in text
    assert "(matches the job id)" in text
