"""A rendered report read back the way a browser sees its structure: every image with the
sections and groups around it, every link, and the text (standard library ``html.parser``)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser

from PIL import Image

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr", "area", "col", "embed"}


@dataclass
class Img:
    attrs: dict[str, str]
    within: list[dict[str, str]]  # the attributes of every open element around it, outermost first
    caption: str = ""  # the text of its <figure>'s figcaption, when in one

    def inside(self, **want: str) -> bool:
        """Whether some element around it has all these attributes (``data_group`` means
        ``data-group``)."""
        want = {k.replace("_", "-"): v for k, v in want.items()}
        return any(all(a.get(k) == v for k, v in want.items()) for a in self.within)

    @property
    def data_uri(self) -> bool:
        return self.attrs.get("src", "").startswith("data:image/")

    def decoded(self) -> Image.Image:
        """The inlined picture, decoded (fails on anything but a real image)."""
        b64 = self.attrs["src"].split("base64,", 1)[1]
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.load()
        return im


@dataclass
class Page:
    imgs: list[Img] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    text: str = ""
    errors: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.figure: list[Img] = []
        self.in_caption = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            im = Img(a, [dict(s) for _, s in self.stack])
            self.page.imgs.append(im)
            if any(t == "figure" for t, _ in self.stack):
                self.figure.append(im)
        if tag == "a" and "href" in a:
            self.page.links.append(a["href"])
        if tag == "figcaption":
            self.in_caption += 1
        if tag not in VOID:
            self.stack.append((tag, {**a, "tag": tag}))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.page.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else None}")
            return
        self.stack.pop()
        if tag == "figcaption":
            self.in_caption -= 1
        if tag == "figure":
            self.figure = []

    def handle_data(self, data):
        self.texts.append(data)
        if self.in_caption:
            for im in self.figure:
                im.caption += data + " "


def read_page(doc: str) -> Page:
    """The page's images (with what surrounds them), links, text and unbalanced tags."""
    r = _Reader()
    r.feed(doc)
    r.close()
    r.page.text = " ".join(" ".join(r.texts).split())  # as a browser collapses white space
    return r.page
