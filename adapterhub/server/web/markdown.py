"""Model cards to safe HTML: Markdown (markdown-it-py, CommonMark + tables) then an allow-list (nh3).

A README is untrusted input: anyone who may push to a repo writes it, and everyone who opens the
adapter page reads it. Cards on the Hugging Face hub mix Markdown and raw HTML, so raw HTML is
parsed (not escaped) and then cleaned by ``nh3`` (the Rust ``ammonia`` sanitiser): only the tags
and attributes listed here survive, ``<script>``/``<style>`` go with their content, every event
handler and ``style`` attribute goes, and links keep only http(s), mailto and relative URLs (no
``javascript:``, ``data:`` or ``vbscript:``). The page's Content-Security-Policy is the second
wall (``security``): even a script that slipped through would not run.

The YAML front matter of a card (``---`` ... ``---``) is metadata, not prose: it is cut off here
and the page shows the catalog's fields instead.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from markupsafe import Markup

__all__ = ["ALLOWED_ATTRIBUTES", "ALLOWED_TAGS", "MAX_CARD_CHARS", "render_card", "strip_front_matter"]

MAX_CARD_CHARS = 200_000  # a longer card is cut: a page is for people, not for a 50 MB README

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span",
    "strong", "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align", "colspan", "rowspan"},
    "th": {"align", "colspan", "rowspan"},
    "ol": {"start"},
    "code": {"class"},
}
URL_SCHEMES = {"http", "https", "mailto"}


@lru_cache(maxsize=1)
def _parser() -> Any:
    from markdown_it import MarkdownIt

    # "js-default" would escape raw HTML; HF cards use it, so it is parsed and sanitised instead
    return MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").enable("strikethrough")


def strip_front_matter(text: str) -> str:
    """The card without its leading YAML block (``---`` line, YAML, ``---`` line)."""
    if not text.startswith("---"):
        return text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return text
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return "".join(lines[i + 1:])
    return text


def render_card(text: str) -> Markup:
    """Sanitised HTML for a model card (safe to insert into a page as is)."""
    import nh3

    html = _parser().render(strip_front_matter(text[:MAX_CARD_CHARS]))
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style", "iframe", "object", "embed", "noscript", "template", "svg", "math"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow ugc",
        strip_comments=True,
    )
    return Markup(cleaned)  # noqa: S704 (cleaned by nh3 with the allow-list above)
