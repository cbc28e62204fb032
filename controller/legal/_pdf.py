"""A printable PDF of a requisition answer, written by hand (pure: lines in, bytes out).

The answer is a few pages of monospaced text, so the smallest PDF does: one Courier
font (a standard Type 1 font every reader has, ISO 32000-1 §9.6.2.2), WinAnsi encoding
for French accents, landscape A4 pages of text, a cross-reference table. A library
would add a dependency for nothing more. The PDF carries no signature of its own: like
the CSV and JSON it gets a detached Ed25519 signature.
"""

from __future__ import annotations

__all__ = ["render"]

_PAGE_W, _PAGE_H = 842, 595  # A4 landscape, points
_MARGIN = 36
_SIZE = 7.5
_LEADING = 10
_LINES_PER_PAGE = int((_PAGE_H - 2 * _MARGIN) // _LEADING)
# Courier advances 0.6 em per glyph: what fits across the page.
MAX_CHARS = int((_PAGE_W - 2 * _MARGIN) / (0.6 * _SIZE))


def _escape(line: str) -> bytes:
    raw = line[:MAX_CHARS].encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(lines: list[str], page: int, pages: int) -> bytes:
    out = [
        b"BT",
        f"/F1 {_SIZE} Tf {_LEADING} TL {_MARGIN} {_PAGE_H - _MARGIN} Td".encode(),
    ]
    for line in lines:
        out.append(b"(" + _escape(line) + b") '")
    out.append(b"ET")
    footer = f"page {page}/{pages}"
    out.append(f"BT /F1 {_SIZE} Tf {_PAGE_W - _MARGIN - 60} {_MARGIN / 2} Td".encode())
    out.append(b"(" + _escape(footer) + b") Tj ET")
    return b"\n".join(out)


def render(lines: list[str]) -> bytes:
    """A PDF showing ``lines`` (cut at ``MAX_CHARS``), paginated."""
    chunks = [lines[i : i + _LINES_PER_PAGE] for i in range(0, max(len(lines), 1), _LINES_PER_PAGE)]
    n = len(chunks)
    # Objects: 1 catalog, 2 pages, 3 font, then for each page: page, contents.
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>",
    ]
    for i, chunk in enumerate(chunks):
        stream = _content(chunk, i + 1, n)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
