"""The Chinese glyphs a report page shows, carried inside the page (pure, but for one file read).

A report is one self-contained HTML file: no script, nothing from the network. On a machine
without a CJK font every Chinese character would be an empty box (the seller's name, the
accepted date forms, nearly all of the Chinese report). So the page carries a font holding
exactly the CJK characters it shows, as a data: URI its content security policy allows
(``font-src data:``).

The glyphs come from ``fonts/DroidSansFallback-GB2312.ttf.gz``: Droid Sans Fallback (Apache
License 2.0, ``fonts/LICENSE-Apache-2.0``; Debian's fonts-droid-fallback) cut down with
fontTools to the characters GB2312 can write (7,180 of them), CJK punctuation and full-width
forms. A character outside it (a rare name) falls back to the viewer's own fonts.
"""

import base64
import functools
import gzip
import io
import os

__all__ = ['FONT_FAMILY', 'font_face']

FONT_FAMILY = 'Novation CJK'
_FONT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fonts',
                     'DroidSansFallback-GB2312.ttf.gz')


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return (0x2E80 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF
            or 0x3000 <= o <= 0x303F)


@functools.lru_cache(maxsize=1)
def _font_bytes() -> bytes:
    with open(_FONT, 'rb') as f:
        return gzip.decompress(f.read())


def font_face(text: str) -> str:
    """A CSS @font-face rule whose font holds the CJK characters of ``text`` the bundled font
    has ('' if there are none)."""
    return _face(''.join(sorted({c for c in text if _is_cjk(c)})))


@functools.lru_cache(maxsize=16)  # a stream's epoch reports show the same characters
def _face(wanted: str) -> str:
    if not wanted:
        return ''
    from fontTools import subset
    from fontTools.ttLib import TTFont
    font = TTFont(io.BytesIO(_font_bytes()), lazy=False)
    cmap = font.getBestCmap()
    present = [c for c in wanted if ord(c) in cmap]
    if not present:
        return ''
    options = subset.Options()
    options.layout_features, options.hinting, options.notdef_outline = [], False, True
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=''.join(present))
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    data = base64.b64encode(out.getvalue()).decode('ascii')
    ranges = ','.join(f'U+{ord(c):04X}' for c in present)
    return (f'@font-face{{font-family:"{FONT_FAMILY}";src:url(data:font/ttf;base64,{data}) '
            f'format("truetype");unicode-range:{ranges}}}')
