"""What a failed pixel read most likely means, from GDAL's message, and what to do about it: an
expired or refused signature, a network or server error (retry), a missing file, else a damaged file.
Signatures are removed from every message (they do not belong in a log)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

__all__ = ["explain_read_failure", "error_text", "without_query"]

_HTTP_CODE = re.compile(r"HTTP (?:response )?(?:code|status)[: ]*(\d{3})", re.IGNORECASE)
_SIGNATURE_WORDS = re.compile(
    r"signature|AuthenticationFailed|AuthorizationFailure|expired|SignatureDoesNotMatch|"
    r"AccessDenied",
    re.IGNORECASE,
)
_NETWORK_WORDS = re.compile(
    r"curl error|could not resolve|couldn't resolve|resolve host|could not connect|"
    r"couldn't connect|failed to connect|connection (?:refused|reset|timed out|was reset)|"
    r"timed out|timeout was reached|operation too slow|network is unreachable|"
    r"ssl connect error|ssl certificate|recv failure|send failure|empty reply from server",
    re.IGNORECASE,
)


def without_query(href: str) -> str:
    """A URL without its query: a signature does not belong in a message or a log."""
    return href.split("?", 1)[0] if "://" in href else href


def _signed(href: str | None) -> bool:
    """Whether a URL carries a signature in its query (an Azure SAS token, an S3 presigned URL)."""
    query = parse_qs(urlparse(href or "").query)
    return bool({"sig", "se", "X-Amz-Signature", "X-Amz-Expires", "Signature"} & set(query))


def explain_read_failure(text: str, href: str | None = None, item_id: str | None = None) -> str:
    """What a failed pixel read most likely means and what to do, from GDAL's message: an expired
    or refused signature, a network or server error (retry), a missing file, else a damaged file."""
    leave_out = (
        f"leave the item out with --exclude-item {item_id}"
        if item_id
        else "leave its STAC item out with --exclude-item ITEM_ID"
    )
    m = _HTTP_CODE.search(text)
    code = int(m.group(1)) if m else None
    if code is None and _NETWORK_WORDS.search(text):  # no answer at all (an expired TLS certificate included)
        return (
            "This is a network error, not a bad file: check the connection (or proxy) to the asset's host and "
            "run the command again."
        )
    if code in (401, 403) or (code is None and _SIGNATURE_WORDS.search(text)):
        if _signed(href) or _SIGNATURE_WORDS.search(text):
            return (
                f"The asset's signed URL was refused{f' (HTTP {code})' if code else ''}: its signature has "
                "expired (signatures are made when the items are searched, with --sign planetary-computer, and "
                "last about an hour). Run the command again: it searches and signs the URLs anew."
            )
        return (
            f"Access to the asset was refused{f' (HTTP {code})' if code else ''}: it needs credentials or a "
            "signed URL (for Planetary Computer assets pass --sign planetary-computer)."
        )
    if code == 404:
        return (
            f"The asset is not there (HTTP 404): the STAC item points to a file that was moved or removed; {leave_out}."
        )
    if code is not None and (code >= 500 or code == 429):
        return (
            f"The server holding the asset failed or is busy (HTTP {code}): this is not a bad file; run the "
            "command again later."
        )
    return f"The file is probably truncated or corrupt: download it again, or {leave_out}."


def error_text(exc: BaseException) -> str:
    """An exception's message with the GDAL messages chained to it ("Read failed. See previous ...")."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if str(exc) and str(exc) not in parts:
            parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return ": ".join(parts)
