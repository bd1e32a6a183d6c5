"""The ``event``, ``stac`` and ``predict`` sections of a job spec (``area`` is in :mod:`.area`).

Their defaults are read from what defines a cube (:class:`~landslide_dask.cube.spec.CubeSpec`) and
a map (:mod:`landslide_dask.predict.config`), never copied: a job's cube is the CLI's cube.
"""

from __future__ import annotations

import re
from datetime import date as Date
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from ..common.validation import Strict, fail, show, suggest
from ..cube.spec import CubeSpec, event_windows
from ..errors import InputDataError
from ..predict.config import DEFAULT_OVERLAP, DEFAULT_WINDOW
from ..predict.windows import resolve_window
from ..train.config import INPUT_MULTIPLE

__all__ = ["DEVICES", "SIGNERS", "Event", "Identifier", "PredictSpec", "StacSpec", "WholeNumber"]

SIGNERS = ("planetary-computer",)
DEVICES = ("cpu", "cuda", "mps", "xpu")


def _whole(v: Any) -> Any:
    """``2.0`` is the whole number 2 (YAML writes some integers so); anything else is left to the type."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _identifier(v: Any) -> Any:
    if isinstance(v, str):
        if not v.strip() or any(ch.isspace() for ch in v.strip()):
            raise ValueError(f"{v!r} is not an id (empty or with spaces)")
        return v.strip()
    return v


WholeNumber = Annotated[int, BeforeValidator(_whole)]
Identifier = Annotated[str, BeforeValidator(_identifier)]


def _cube(name: str) -> Any:
    """The default of :class:`CubeSpec` field ``name``: a job's sections take the CLI's cube defaults."""
    return CubeSpec.__dataclass_fields__[name].default


class Event(Strict):
    date: Date = Field(description="a date YYYY-MM-DD", examples=["2015-04-25"])
    pre_days: WholeNumber = Field(
        _cube("pre_days"), ge=1, le=3650, description="a whole number of days, 1-3650", examples=[_cube("pre_days")]
    )
    post_days: WholeNumber = Field(
        _cube("post_days"), ge=1, le=3650, description="a whole number of days, 1-3650", examples=[_cube("post_days")]
    )
    post_only: bool = Field(_cube("post_only"), description="true or false", examples=["false"])

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        if isinstance(v, Date) or v is None:
            return v
        if not isinstance(v, str):
            raise ValueError(f"got {show(v)}, not a date")
        text = v.strip()
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError
            d = Date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{v!r} is not a valid date") from None
        if not 1972 <= d.year <= 2100:
            raise ValueError(f"{d} is out of range (optical satellite era)")
        return d

    @property
    def pre_window(self) -> tuple[Date, Date]:
        return event_windows(self.date, self.pre_days, self.post_days)[0]

    @property
    def post_window(self) -> tuple[Date, Date]:
        return event_windows(self.date, self.pre_days, self.post_days)[1]


class StacSpec(Strict):
    url: str = Field(
        description="the http(s) URL of a STAC API", examples=["https://earth-search.aws.element84.com/v1"]
    )
    collection: Identifier = Field(
        _cube("collection"), description="a STAC collection id", examples=[_cube("collection")]
    )
    bands: tuple[str, ...] = Field(
        _cube("bands"),
        examples=[f"[{', '.join(_cube('bands'))}]"],
        description="a list of asset keys, in the order the model expects",
    )
    scl_asset: Identifier | None = Field(
        _cube("scl_asset"), description="the scene classification asset key, or null", examples=[_cube("scl_asset")]
    )
    max_cloud: float | None = Field(
        _cube("max_cloud"), ge=0, le=100, description="a percentage 0-100, or null", examples=[80]
    )
    sign: str | None = Field(_cube("sign"), description="null or planetary-computer", examples=["planetary-computer"])
    dem_collection: Identifier | None = Field(
        _cube("dem_collection"), description="a STAC collection id, or null", examples=[_cube("dem_collection")]
    )
    dem_asset: Identifier = Field(_cube("dem_asset"), description="an asset key", examples=[_cube("dem_asset")])

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        p = urlparse(v.strip())
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ValueError(
                f"{v!r} is not an http(s) URL of a STAC API (a static catalog file cannot be "
                "searched: serve it with `landslide-dask serve-stac`)"
            )
        return v.strip()

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raise ValueError(f"got the text {raw!r}; write a YAML list, e.g. [blue, green, red, nir]")
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ValueError(f"got {show(raw)}, not a non-empty list")
        for i, b in enumerate(raw):
            if not isinstance(b, str) or not b.strip():
                fail(f"got {show(b)}, not an asset key", i)
        out = tuple(b.strip() for b in raw)
        dup = sorted({b for b in out if out.count(b) > 1})
        if dup:
            raise ValueError(f"{', '.join(dup)} listed more than once")
        return out

    @field_validator("sign")
    @classmethod
    def _sign(cls, v: str | None) -> str | None:
        if v is None:
            return None
        key = v.strip().lower().replace("_", "-")
        if key not in SIGNERS:
            raise ValueError(f"unknown signing method {v!r}{suggest(key, SIGNERS)}")
        return key

    @model_validator(mode="after")
    def _planetary_computer_is_signed(self) -> StacSpec:
        if "planetarycomputer" in self.url and self.sign is None:
            if "sign" in self.model_fields_set:
                fail(
                    "the Planetary Computer's asset URLs must be signed to be read: set `sign: planetary-computer`",
                    "sign",
                )
            fail(
                "missing: the Planetary Computer's asset URLs must be signed to be read: add "
                "`sign: planetary-computer`",
                "sign",
            )
        return self


class PredictSpec(Strict):
    """How each cell's probability map is inferred (:func:`landslide_dask.predict.predict`)."""

    window: WholeNumber = Field(
        DEFAULT_WINDOW,
        examples=[DEFAULT_WINDOW],
        description=f"a window in pixels, a positive multiple of {INPUT_MULTIPLE}",
    )
    overlap: WholeNumber = Field(
        DEFAULT_OVERLAP,
        examples=[DEFAULT_OVERLAP],
        description=f"the overlap of neighbouring windows in pixels, a multiple of "
        f"{INPUT_MULTIPLE} smaller than the window",
    )
    batch_size: WholeNumber | None = Field(
        None, ge=1, examples=[4], description="windows per forward pass, or null (the device's default)"
    )
    device: str | None = Field(
        None, examples=["cuda"], description="cpu, cuda, cuda:N, mps, or null (CUDA on workers that have it)"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, v: int) -> int:
        try:
            return resolve_window(v, 0)[0]
        except InputDataError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, v: int, info: ValidationInfo) -> int:
        if "window" not in info.data:  # a bad window is reported already
            return v
        try:
            return resolve_window(info.data["window"], v)[1]
        except InputDataError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is None:
            return None
        text = v.strip().lower()
        if not re.fullmatch(rf"({'|'.join(DEVICES)})(:\d+)?", text):
            raise ValueError(f"unknown device {v!r}{suggest(text.split(':')[0], DEVICES)}")
        return text

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`landslide_dask.predict.predict`."""
        return self.model_dump()
