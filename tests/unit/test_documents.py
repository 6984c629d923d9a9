"""shared/sources/documents.py without the optional PDF dependency (no services)."""
from __future__ import annotations

import sys

import pytest

from shared.core.errors import SourceError
from shared.sources import documents

pytestmark = pytest.mark.unit


def test_pdf_without_unstructured_inference_names_the_missing_package(tmp_path, monkeypatch):
    # A plain `pip install .` has no unstructured-inference (README, "Installing without just"):
    # a PDF must fail with the package to install, not a bare ModuleNotFoundError.
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    monkeypatch.setitem(sys.modules, "unstructured_inference", None)  # makes its import fail
    with pytest.raises(SourceError) as info:
        documents.elements(pdf, "pdf")
    assert str(info.value) == ("PDF documents need unstructured-inference, installed without its dependencies: "
                               "pip install --no-deps unstructured-inference==1.6.14 (`just install` does it)")


def test_other_formats_do_not_need_it(tmp_path, monkeypatch):
    text = tmp_path / "notes.md"
    text.write_text("# Title\n\nOne paragraph.\n")
    monkeypatch.setitem(sys.modules, "unstructured_inference", None)
    found = documents.elements(text, "markdown")
    assert [(type(e).__name__, e.text) for e in found] == [("Title", "Title"), ("Text", "One paragraph.")]
