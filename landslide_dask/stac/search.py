"""STAC item search: one code path for the loopback server, Earth Search and Planetary Computer.

Why this wrapper around pystac-client:

- items come back as plain dicts (``items_as_dicts``) because pystac objects drop ``proj:epsg``
  written next to ``proj:code`` (pystac 1.10+), which tools that read projection v1 need;
- the cloud filter uses the ``query`` extension where the server conforms to it (Earth Search,
  Planetary Computer), CQL2 ``filter`` where only that is offered, and is applied client-side
  otherwise. ``rustac serve`` conforms to neither, and a ``query`` body sent to it silently
  returns no items at all, so we never send one to a server that does not advertise it;
- transient failures (connection reset, read time-out, HTTP 429/500/502/503/504) are retried with
  exponential back-off and a bounded total time; a dead server becomes
  :class:`~landslide_dask.errors.StacUnreachableError`, an empty answer an
  :class:`~landslide_dask.errors.EmptySearchError` that says what to widen.
"""

from __future__ import annotations

import difflib
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from urllib3.util.retry import Retry

from ..errors import EmptySearchError, LandslideDaskError, StacUnreachableError, UsageError
from .local import collection_ids, filter_items, is_local_source, read_local_items

log = logging.getLogger(__name__)

__all__ = [
    "EARTH_SEARCH",
    "PLANETARY_COMPUTER",
    "RETRY_STATUSES",
    "search_items",
    "make_retry",
    "resolve_signer",
]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"

#: HTTP statuses worth retrying: rate limiting and gateway/overload errors.
RETRY_STATUSES = (429, 500, 502, 503, 504)
_PAGE_SIZE = 100

Bbox = tuple[float, float, float, float]
DateLike = str | date | datetime | None
Signer = Callable[[dict[str, Any]], Any]


class _CappedRetry(Retry):
    """urllib3 Retry whose Retry-After wait is capped by ``backoff_max``.

    A server asking for ``Retry-After: 3600`` must not freeze a pipeline for an hour.
    """

    def get_retry_after(self, response: Any) -> float | None:  # type: ignore[override]
        value = super().get_retry_after(response)
        if value is None:
            return None
        return min(value, self.backoff_max)


def make_retry(retries: int, backoff_factor: float = 0.5, backoff_max: float = 10.0) -> Retry:
    """Retry policy for STAC requests: POST searches are idempotent, so retry them too."""
    return _CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=5,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST", "HEAD", "OPTIONS"}),
        raise_on_status=False,  # hand back the last response so we can report its status
        respect_retry_after_header=True,
    )


def resolve_signer(sign: str | Signer | None) -> Callable[[Any], None] | None:
    """Turn ``sign`` into a pystac-client ``modifier``.

    ``"planetary-computer"`` signs Azure blob hrefs with ``planetary_computer.sign_inplace``
    (imported lazily: an optional extra). A callable is called with each item dict and may
    change it in place (its return value is ignored).
    """
    if sign is None:
        return None
    if isinstance(sign, str):
        key = sign.strip().lower().replace("_", "-")
        if key in ("planetary-computer", "pc", "planetarycomputer"):
            try:
                import planetary_computer
            except ImportError as e:
                raise LandslideDaskError(
                    "signing Planetary Computer asset URLs needs the `planetary-computer` package: "
                    "pip install 'landslide-dask[pc]'"
                ) from e
            sign_inplace = planetary_computer.sign_inplace

            def _pc(obj: Any) -> None:
                sign_inplace(obj)

            return _pc
        if key in ("none", ""):
            return None
        raise LandslideDaskError(f"unknown signing method {sign!r}: use 'planetary-computer' or none.")
    if callable(sign):
        user_sign = sign

        def _per_item(obj: Any) -> None:
            if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
                for feat in obj.get("features") or []:
                    user_sign(feat)
            elif isinstance(obj, dict) and obj.get("type") == "Feature":
                user_sign(obj)

        return _per_item
    raise LandslideDaskError(f"sign must be None, 'planetary-computer' or a callable, not {type(sign).__name__}.")


def _check_bbox(bbox: Sequence[float]) -> Bbox:
    try:
        vals = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise UsageError(f"bbox must be four numbers (west, south, east, north), got {bbox!r}.") from e
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise UsageError(f"bbox must be four finite numbers (west, south, east, north), got {bbox!r}.")
    w, s, e, n = vals
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        if -90 <= w <= 90 and -90 <= e <= 90 and -180 <= s <= 180 and -180 <= n <= 180:
            raise UsageError(
                f"bbox {vals} looks like (south, west, north, east), latitude first: STAC bboxes are "
                f"(west, south, east, north), longitude first: {(s, w, n, e)}."
            )
        raise UsageError(
            f"bbox {vals} is not in lon/lat degrees (EPSG:4326): STAC search bboxes are "
            "(west, south, east, north) in degrees, not projected metres."
        )
    if s > n:
        raise UsageError(f"bbox {vals}: south ({s}) is north of north ({n}); order is (west, south, east, north).")
    if w > e:
        log.info("bbox %s crosses the antimeridian (west > east)", vals)
    return vals  # type: ignore[return-value]


def _iso(value: DateLike) -> str | None:
    """A date/datetime/string as pystac-client wants it; naive datetimes are taken as UTC."""
    if value is None or value == "..":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value.strip()
    raise UsageError(f"cannot use {value!r} as a date: give an ISO string, a date or a datetime.")


def _datetime_arg(dt: Any) -> list[str | None] | str | None:
    if dt is None:
        return None
    if isinstance(dt, (str, date)):
        return _iso(dt)
    try:
        start, end = dt
    except (TypeError, ValueError) as e:
        raise UsageError(f"datetime must be (start, end), got {dt!r}.") from e
    return [_iso(start), _iso(end)]


def _describe_dates(dt: Any) -> str:
    if dt is None:
        return "any date"
    if isinstance(dt, list):
        return f"{dt[0] or '..'} to {dt[1] or '..'}"
    return str(dt)


def _status(err: Exception) -> int | None:
    return getattr(err, "status_code", None)


def _unreachable(url: str, err: Exception, timeout: float, retries: int) -> StacUnreachableError:
    status = _status(err)
    if status is not None:
        what = f"it answered HTTP {status} after {retries} retries ({str(err)[:200].strip()})"
    else:
        what = f"no answer after {retries} retries with a {timeout:g} s time-out ({str(err)[:300].strip()})"
    return StacUnreachableError(
        f"the STAC API at {url} is unreachable: {what}. Check the URL, your network or proxy "
        "settings, and whether the service is up (for a local catalogue: is `landslide-dask "
        "serve-stac` still running on that port?); then try again, or raise the time-out/retries."
    )


def _wrap_api_error(url: str, err: Exception, timeout: float, retries: int, during: str) -> LandslideDaskError:
    status = _status(err)
    if status is None or status in RETRY_STATUSES:
        return _unreachable(url, err, timeout, retries)
    return LandslideDaskError(f"the STAC API at {url} refused the {during} (HTTP {status}): {str(err)[:500].strip()}")


def _list_collections(client: Any) -> list[str] | None:
    """Collection ids the server offers, or None when it cannot say (never masks the real error)."""
    try:
        return sorted(c.id for c in client.get_collections())
    except Exception as e:  # noqa: BLE001 - only used to enrich a message
        log.debug("listing collections failed: %s", e)
        return None


def _empty_message(
    url: str,
    collections: list[str],
    bbox: Bbox,
    dt: Any,
    max_cloud: float | None,
    available: list[str] | None,
    cloud_dropped: tuple[int, int, float | None] | None,
) -> str:
    cloud = "no cloud filter" if max_cloud is None else f"eo:cloud_cover < {max_cloud:g} %"
    msg = (
        f"no STAC items at {url} for collection(s) {', '.join(collections)}, bbox {list(bbox)} "
        f"(lon/lat), dates {_describe_dates(dt)}, {cloud}."
    )
    missing = [c for c in collections if available is not None and c not in available]
    if missing:
        shown = available[:40] if available else []
        msg += f" The server has no collection {', '.join(repr(c) for c in missing)}"
        close = sorted({m for c in missing for m in difflib.get_close_matches(c, available or [], n=3)})
        if close:
            msg += f" (did you mean {', '.join(close)}?)"
        msg += f"; it has: {', '.join(shown) or 'none'}" + (" ..." if available and len(available) > 40 else "") + "."
    if cloud_dropped is not None:
        n_over, n_unknown, lowest = cloud_dropped
        parts = []
        if n_over:
            parts.append(f"{n_over} item(s) matched area and dates but were cloudier (least cloudy: {lowest:g} %)")
        if n_unknown:
            parts.append(
                f"{n_unknown} item(s) have no eo:cloud_cover "
                "(e.g. catalogued GeoTIFFs: search them without a cloud filter)"
            )
        if parts:
            msg += " " + "; ".join(parts) + "."
    msg += (
        " Try widening the date range, enlarging the area, raising the cloud threshold"
        " (or dropping it), or checking the collection id."
    )
    return msg


def search_items(
    url: str,
    collections: list[str] | str,
    bbox: Sequence[float],
    datetime: tuple[DateLike, DateLike] | str | None = None,
    max_cloud: float | None = None,
    sign: str | Signer | None = None,
    max_items: int | None = None,
    timeout: float = 30,
    retries: int = 4,
    backoff_factor: float = 0.5,
) -> list[dict[str, Any]]:
    """Search a STAC API, or a local source (``url`` a path: a ``catalog`` folder, a static
    catalog, an ItemCollection file; :mod:`landslide_dask.stac.local`), filtered the same way;
    return the matching items as plain dicts (never an empty list).

    ``bbox`` is (west, south, east, north) in degrees; ``datetime`` a (start, end) pair of ISO
    strings, dates or datetimes (either may be None/".." for open), whole days inclusive;
    ``max_cloud`` keeps items with ``eo:cloud_cover`` below it (items without the property
    are kept only when no cloud filter is given); ``sign`` is None, ``"planetary-computer"``
    or a callable applied to each item dict in place. Raises EmptySearchError,
    StacUnreachableError, or LandslideDaskError for other refusals.
    """
    if isinstance(collections, str):
        collections = [collections]
    collections = list(collections)
    if not collections:
        raise UsageError("give at least one STAC collection id to search.")
    box = _check_bbox(bbox)
    dt = _datetime_arg(datetime)
    if max_cloud is not None and not (0 <= float(max_cloud) <= 100):
        raise UsageError(f"max_cloud is a percentage (0-100), got {max_cloud}.")
    if max_items is not None and max_items < 1:
        raise UsageError(f"max_items must be at least 1, got {max_items}.")
    modifier = resolve_signer(sign)
    if is_local_source(url):
        return _search_local(url, collections, box, dt, max_cloud, modifier, max_items)

    retries = max(0, int(retries))
    url = url.rstrip("/")
    client = _open_api(url, modifier, timeout, retries, backoff_factor)
    kwargs, client_side_cloud = _search_kwargs(client, url, collections, box, dt, max_cloud, max_items)
    items, dropped = _run_search(
        client, url, kwargs, collections, box, dt, max_cloud, max_items, client_side_cloud, timeout, retries
    )
    if not items:
        available = _list_collections(client)
        raise EmptySearchError(_empty_message(url, collections, box, dt, max_cloud, available, dropped))
    log.info("%d STAC item(s) from %s (%s)", len(items), url, ", ".join(collections))
    return items


def _open_api(url: str, modifier, timeout: float, retries: int, backoff_factor: float):
    """The pystac-client ``Client`` of a STAC API that offers item search; clear errors otherwise.
    Back-off waits (and any Retry-After) are capped so the total stays ~ timeout * (retries + 1)."""
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    retry = make_retry(retries, backoff_factor, backoff_max=max(1.0, min(10.0, timeout)))
    stac_io = StacApiIO(timeout=timeout, max_retries=retry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoConformsTo etc.: we report problems ourselves
            client = Client.open(url, stac_io=stac_io, timeout=timeout, modifier=modifier)
    except APIError as e:
        raise _wrap_api_error(url, e, timeout, retries, "connection") from e
    except (ValueError, KeyError, TypeError) as e:
        raise LandslideDaskError(
            f"{url} did not answer with a STAC catalogue/API root ({e}): is it a STAC API URL?"
        ) from e
    except Exception as e:
        if type(e).__module__.startswith("pystac"):
            raise LandslideDaskError(f"{url} did not answer with a STAC API root ({e}).") from e
        raise
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        raise LandslideDaskError(
            f"{url} does not offer STAC item search (no item-search conformance): give the URL of a "
            "STAC API, or the catalogue itself (a folder or an ItemCollection file) as --stac."
        )
    return client


def _search_kwargs(
    client, url: str, collections: list[str], box: Bbox, dt: Any, max_cloud: float | None, max_items: int | None
) -> tuple[dict[str, Any], bool]:
    """The search's arguments, and whether the cloud filter must be applied here (the server
    offers neither the query nor the filter extension)."""
    from pystac_client.conformance import ConformanceClasses

    kwargs: dict[str, Any] = {"collections": collections, "bbox": list(box), "limit": _PAGE_SIZE}
    if dt is not None:
        kwargs["datetime"] = dt
    client_side_cloud = False
    if max_cloud is not None:
        if client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = {"eo:cloud_cover": {"lt": float(max_cloud)}}
        elif client.conforms_to(ConformanceClasses.FILTER):
            kwargs["filter"] = {"op": "<", "args": [{"property": "eo:cloud_cover"}, float(max_cloud)]}
            kwargs["filter_lang"] = "cql2-json"
        else:
            client_side_cloud = True
            log.info("%s has neither query nor filter support: filtering eo:cloud_cover here", url)
    if max_items is not None and not client_side_cloud:
        kwargs["max_items"] = max_items
    return kwargs, client_side_cloud


def _run_search(
    client,
    url: str,
    kwargs: dict[str, Any],
    collections: list[str],
    box: Bbox,
    dt: Any,
    max_cloud: float | None,
    max_items: int | None,
    client_side_cloud: bool,
    timeout: float,
    retries: int,
) -> tuple[list[dict[str, Any]], tuple[int, int, float | None] | None]:
    """Page through the search: (items, what the client-side cloud filter dropped or None)."""
    from pystac_client.exceptions import APIError

    items: list[dict[str, Any]] = []
    n_over = n_unknown = 0
    lowest: float | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "numberMatched not in response" from rustac
            for item in client.search(**kwargs).items_as_dicts():
                if client_side_cloud:
                    cc = (item.get("properties") or {}).get("eo:cloud_cover")
                    if cc is None:
                        n_unknown += 1
                        continue
                    if not float(cc) < float(max_cloud):  # type: ignore[arg-type]
                        n_over += 1
                        lowest = float(cc) if lowest is None else min(lowest, float(cc))
                        continue
                items.append(item)
                if max_items is not None and len(items) >= max_items:
                    break
    except APIError as e:
        status = _status(e)
        if status is not None and 400 <= status < 500 and status not in RETRY_STATUSES:
            available = _list_collections(client)
            if available is not None and any(c not in available for c in collections):
                raise EmptySearchError(_empty_message(url, collections, box, dt, max_cloud, available, None)) from e
        raise _wrap_api_error(url, e, timeout, retries, "search") from e
    except NotImplementedError as e:
        raise LandslideDaskError(f"{url} cannot run this search: {e}") from e
    return items, ((n_over, n_unknown, lowest) if client_side_cloud else None)


def _search_local(
    source: str,
    collections: list[str],
    box: Bbox,
    dt: Any,
    max_cloud: float | None,
    modifier: Callable[[Any], None] | None,
    max_items: int | None,
) -> list[dict[str, Any]]:
    """``search_items`` over files: the items a server would return, the same empty-search message."""
    everything = read_local_items(source)
    items, dropped = filter_items(everything, collections, box, dt, max_cloud)
    if not items:
        raise EmptySearchError(
            _empty_message(
                str(source),
                collections,
                box,
                dt,
                max_cloud,
                collection_ids(everything),
                dropped if max_cloud is not None else None,
            )
        )
    if max_items is not None:
        items = items[:max_items]
    if modifier is not None:
        for item in items:
            modifier(item)
    log.info("%d STAC item(s) from %s (%s)", len(items), source, ", ".join(collections))
    return items
