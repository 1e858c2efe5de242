"""One self-contained HTML file from a page in a folder: what a KFP HTML artifact can show.

The KFP UI renders an HTML artifact as a single file, so local images, audio, stylesheets,
scripts and downloads the page links to are embedded as data: URIs. Links to other pages
(`.html`) and remote URLs are left as they are.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path

_ATTR = re.compile(r'\b(src|href)="([^"#:]+)"')


def inline_page(page: Path, base: Path | None = None) -> str:
    """The text of `page` with every local, non-HTML `src`/`href` target under `base` (default:
    the page's folder) embedded."""
    page = Path(page)
    root = Path(base or page.parent).resolve()

    def embed(match: re.Match[str]) -> str:
        target = (page.parent / match.group(2)).resolve()
        if target.suffix in (".html", ".htm") or not target.is_file() or not target.is_relative_to(root):
            return match.group(0)
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        data = base64.b64encode(target.read_bytes()).decode()
        return f'{match.group(1)}="data:{mime};base64,{data}"'

    return _ATTR.sub(embed, page.read_text(encoding="utf-8"))


def data_docs_page(docs_dir: Path) -> Path:
    """The Great Expectations page worth showing: the validation result, else the site index."""
    results = sorted(Path(docs_dir).glob("validations/**/*.html"))
    return results[-1] if results else Path(docs_dir) / "index.html"
