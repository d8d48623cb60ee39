"""The one-stop settlement slip: built from stored documents, rendered to HTML and to PDF, and read back as a
person would read it (pdftotext for the words, pdftoppm for the picture, pdffonts for the embedded fonts)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from settlement.present.slip import Receipt, Reversal, Slip, render_html, render_pdf, slip_from_documents
from tests.factories import ROOT

PRINTED = datetime(2024, 3, 12, 2, 16, tzinfo=UTC)
ID_NUMBER = "611002196804120038"


def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    claim = json.loads((ROOT / "examples" / "requests" / "settle-dibao-county.json").read_text("utf-8"))["claim"]
    result = json.loads((ROOT / "adapters" / "standard" / "examples" / "settle" / "result.json").read_text("utf-8"))
    return claim, result["body"]


RECEIPTS = (Receipt("390100-2024-00000123", "390100", Decimal("333.00")),
            Receipt("610100-2024-00000045", "610100", Decimal("357.70"), follows=("390100-2024-00000123",)))


def slip(**changes: Any) -> Slip:
    claim, result = documents()
    return slip_from_documents(claim, result, printed_at=PRINTED, category_names={"dibao_rural_a": "农村低保对象 A类"},
                               receipts=RECEIPTS, **changes)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (poppler-utils; .ci/run installs it)")
    return found


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "slip.pdf"
    path.write_bytes(pdf)
    text = subprocess.run([tool("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    return "".join(text.split())  # letter spacing and table layout put spaces between characters


def test_the_slip_reads_every_payer_and_what_the_patient_pays() -> None:
    made = slip()
    assert [line.fund for line in made.payers] == ["390100", "390200", "610100"]  # eligible layers, in chain order
    assert made.paid_by_funds + made.patient_pays == made.total
    assert made.patient_pays_in_words == "贰佰壹拾叁元叁角"
    assert made.id_number_masked == "611002********0038"
    assert made.payers[2].receipt is not None and made.payers[2].receipt.follows == ("390100-2024-00000123",)


def test_the_pdf_holds_the_figures_names_and_receipts_in_chinese(tmp_path: Path) -> None:
    text = pdf_text(render_pdf(slip()), tmp_path)
    for expected in ("医疗保障一站式结算单", "商州区人民医院", "H61100200011", "县级医疗机构", "王喆",
                     "611002********0038",
                     "农村低保对象 A类", "住院", "904.00", "844.00", "333.00", "357.70", "690.70", "213.30",
                     "贰佰壹拾叁元叁角", "390100-2024-00000123", "610100-2024-00000045", "起付线 400.00 元",
                     "444.00 元 × 75%", "城乡居民基本医疗保险统筹基金", "医疗救助基金", "2024-03-12 10:16:00"):
        assert "".join(expected.split()) in text, expected
    assert ID_NUMBER not in text
    assert "冲销" not in text and "补打" not in text


def test_a_reversed_reprint_says_so_and_names_the_reversal_receipts(tmp_path: Path) -> None:
    reversal = Reversal("RV20240313ABCDEF", datetime(2024, 3, 13, 2, 0, tzinfo=UTC),
                        (Receipt("390100-2024-00000124", "390100", Decimal("-333.00"),
                                 cancels="390100-2024-00000123"),))
    text = pdf_text(render_pdf(slip(reversal=reversal, print_number=3)), tmp_path)
    assert "冲销" in text and "RV20240313ABCDEF" in text and "390100-2024-00000124" in text
    assert "补打（第2次）" in text and "第3次打印" in text


def test_the_fonts_are_embedded(tmp_path: Path) -> None:
    path = tmp_path / "slip.pdf"
    path.write_bytes(render_pdf(slip()))
    fonts = subprocess.run([tool("pdffonts"), str(path)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
    assert rows and any("CJK" in row[0] for row in rows), fonts
    # Columns: name, type..., encoding, emb, sub, uni, object, id: "emb" is the fourth from the end but three.
    assert all(row[-5] == "yes" for row in rows), fonts


def test_the_page_is_not_blank(tmp_path: Path) -> None:
    """Rendered to PNG, the page has ink: a share of dark pixels a page of tables and text has, and a blank page
    (the control) has not."""
    from PIL import Image

    def ink(pdf: bytes, name: str) -> float:
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(pdf)
        subprocess.run([tool("pdftoppm"), "-png", "-r", "40", "-singlefile", str(path), str(tmp_path / name)],
                       check=True)
        image = Image.open(tmp_path / f"{name}.png").convert("L")
        dark = sum(image.histogram()[:128])
        return dark / (image.width * image.height)

    from weasyprint import HTML  # type: ignore[import-untyped]

    assert ink(render_pdf(slip()), "slip") > 0.02
    assert ink(HTML(string="<p></p>").write_pdf(), "blank") < 0.001


def test_what_the_claim_says_is_text_never_markup() -> None:
    claim, result = documents()
    claim = copy.deepcopy(claim)
    claim["hospital"]["name"] = "<script>alert(1)</script>医院"
    claim["patient"]["name"] = "王&喆"
    page = render_html(slip_from_documents(claim, result, printed_at=PRINTED))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;医院" in page and "王&amp;喆" in page


def test_the_html_loads_nothing_from_elsewhere() -> None:
    page = render_html(slip())
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
