"""`catgan serve`'s HTTP app: one static page and a small PNG/JSON API over one loaded generator.

    GET /                                   the page (static/index.html, app.js, style.css; nothing remote)
    GET /api/info                           model name, hash, config and limits, as JSON
    GET /api/cat/{seed}.png                 one cat
    GET /api/grid.png?seeds=0-15,42         a grid of up to 64 cats (comma list, inclusive ranges)
    GET /api/interpolate.png?a=&b=&t=       the cat at t in [0, 1] on the latent path from seed a to seed b
    GET /openapi.json                       the OpenAPI schema (FastAPI's usual path)
Image endpoints take an optional `truncation` in [0, 1] (1 = none).

Generation runs in worker threads, at most `max_concurrency` at a time; a request that finds more than
`max_waiting` others queued gets a 503 instead of piling up. Every image carries an ETag (model sha256 +
parameters), answers If-None-Match with 304, and is kept in a bounded LRU cache owned by the app.
Bad input is a 422 with {"error": "...", "parameter": "..."}; no response carries a stack trace.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import torch
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, BeforeValidator
from starlette.exceptions import HTTPException

from catgan import __version__
from catgan.config import to_dict
from catgan.errors import CatganError
from catgan.generate import (
    SEED_LIMIT,
    LoadedGenerator,
    generate_from_latents,
    generate_images,
    latents_from_seeds,
    make_grid,
    slerp,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_IMAGES = 64  # most images one request may ask for
MAX_SEEDS_TEXT = 1000  # characters in a `seeds` query: enough for 64 ten-digit seeds and commas
CACHE_CONTROL = "public, max-age=86400"  # images are a pure function of model + parameters
_ITEM_RE = re.compile(r"^([0-9]{1,20})(?:-([0-9]{1,20}))?$")


def _plain_digits(value: Any) -> Any:
    """Seeds are written as plain decimal digits: not "+5", " 5", "1_000" (which int() would take)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,20}", value):
        raise ValueError("a seed is a whole number in [0, 2^32) written in digits")
    return value


# Parameter types: FastAPI validates them and documents them in the OpenAPI schema.
Seed = Annotated[
    int, PathParam(ge=0, lt=SEED_LIMIT, description="an integer in [0, 2^32)"), BeforeValidator(_plain_digits)
]
SeedQ = Annotated[
    int, Query(ge=0, lt=SEED_LIMIT, description="an integer in [0, 2^32)"), BeforeValidator(_plain_digits)
]
Truncation = Annotated[
    float, Query(ge=0.0, le=1.0, description="latent truncation in [0, 1]; 1 = none, 0 = the mean cat")
]
Seeds = Annotated[str, Query(description="e.g. 0,1,2 or 0-15; at most 64 images", max_length=MAX_SEEDS_TEXT)]
Nrow = Annotated[int | None, Query(ge=1, le=MAX_IMAGES, description="images per row")]
T = Annotated[float, Query(ge=0.0, le=1.0, description="0 = cat a, 1 = cat b")]


class ApiError(BaseModel):
    """Every error body: one line, and the parameter at fault where there is one."""

    error: str
    parameter: str | None = None


PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "a PNG (ETag + Cache-Control; 304 on If-None-Match)"},
    422: {"model": ApiError, "description": "bad input; `parameter` names it"},
    503: {"model": ApiError, "description": "too many images queued; retry after Retry-After seconds"},
}


class BadParameter(Exception):
    """Bad input in one named request parameter: answered as a 422 with a one-line message."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def parse_seed_list(text: str, parameter: str = "seeds", limit: int = MAX_IMAGES) -> list[int]:
    """ "0,1,2", "0-15" or "3,10-12" -> seeds, checked against [0, 2^32) and `limit` before expanding.

    Ranges are inclusive and ascending; duplicates are kept (a grid shows what was asked for).
    """
    if len(text) > MAX_SEEDS_TEXT:
        raise BadParameter(
            parameter, f"{parameter}: too long ({len(text)} characters, at most {MAX_SEEDS_TEXT})"
        )
    ranges: list[tuple[int, int]] = []
    count = 0
    for item in text.split(","):
        m = _ITEM_RE.match(item.strip())
        if m is None:
            raise BadParameter(
                parameter,
                f"{parameter}: {item.strip()[:40]!r} is not a seed or a range; use e.g. 0,1,2 or 0-15",
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise BadParameter(parameter, f"{parameter}: range {lo}-{hi} runs backwards; write {hi}-{lo}")
        if hi >= SEED_LIMIT:
            raise BadParameter(parameter, f"{parameter}: seed {hi} is outside [0, {SEED_LIMIT})")
        count += hi - lo + 1
        if count > limit:
            raise BadParameter(parameter, f"{parameter}: asks for more than {limit} images")
        ranges.append((lo, hi))
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 (3, H, W) -> PNG bytes."""
    array = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    buf = io.BytesIO()
    # zlib level 1: ~5x faster than Pillow's default 6 for ~20% more bytes; on a local page speed wins
    Image.fromarray(array, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class PngCache:
    """A bounded LRU of encoded images, by entry count and total bytes. Used from the event loop only."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 64 * 2**20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> None:
        if len(body) > self.max_bytes or self.max_entries < 1:
            return
        old = self._items.pop(key, None)
        self.nbytes += len(body) - (len(old) if old is not None else 0)
        self._items[key] = body
        while len(self._items) > self.max_entries or self.nbytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.nbytes -= len(dropped)


def make_etag(model_sha256: str, kind: str, params: dict[str, Any]) -> str:
    text = json.dumps([model_sha256, kind, params], sort_keys=True)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _error(status: int, message: str, parameter: str | None = None, headers=None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error -> (parameter, one-line message naming it and the bad value)."""
    loc = [str(x) for x in err.get("loc", ())]
    parameter = loc[-1] if loc else "request"
    message = f"{parameter}: {err.get('msg', 'invalid value')}"
    if err.get("type") != "missing" and "input" in err:
        message += f", got {str(err['input'])[:40]!r}"
    return parameter, message


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def create_app(
    gen: LoadedGenerator,
    max_concurrency: int = 2,
    max_waiting: int = 64,
    cache_entries: int = 1024,
    cache_bytes: int = 64 * 2**20,
) -> FastAPI:
    """The app for one generator. All state (cache, limiter, queue count) lives in this instance."""
    if max_concurrency < 1:
        raise CatganError(f"max_concurrency must be >= 1, got {max_concurrency}")
    app = FastAPI(
        title="catgan",
        version=__version__,
        description=f"Draw cats with the generator {gen.name!r}.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: the page must stay local
        redoc_url=None,
    )
    cache = PngCache(cache_entries, cache_bytes)
    limiter = anyio.CapacityLimiter(max_concurrency)  # the semaphore on generation threads
    waiting = [0]  # requests queued for or inside the limiter (a one-slot box the handlers share)
    n_params = sum(p.numel() for p in gen.G.parameters())
    app.state.cache = cache
    app.state.limiter = limiter

    @app.exception_handler(BadParameter)
    async def _bad_parameter(request: Request, exc: BadParameter) -> JSONResponse:
        return _error(422, exc.message, exc.parameter)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parameter, message = _validation_message(exc.errors()[0] if exc.errors() else {})
        return _error(422, message, parameter)

    @app.exception_handler(CatganError)
    async def _catgan_error(request: Request, exc: CatganError) -> JSONResponse:
        # input is validated before generation, so a CatganError here is the server's fault
        return _error(500, f"generation failed: {str(exc).splitlines()[0]}")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    async def image_response(
        request: Request, kind: str, params: dict[str, Any], render: Callable[[], torch.Tensor]
    ) -> Response:
        etag = make_etag(gen.sha256, kind, params)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        body = cache.get(etag)
        if body is None:
            if waiting[0] >= max_waiting:
                raise HTTPException(
                    503, "server busy: too many images queued; retry shortly", {"Retry-After": "1"}
                )
            waiting[0] += 1
            try:
                body = await anyio.to_thread.run_sync(lambda: encode_png(render()), limiter=limiter)
            finally:
                waiting[0] -= 1
            cache.put(etag, body)
        return Response(body, media_type="image/png", headers=headers)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", summary="The model: name, hash, config and the API's limits")
    async def info() -> dict[str, Any]:
        return {
            "name": gen.name,
            "sha256": gen.sha256,
            "source": str(gen.source),
            "model": to_dict(gen.model),
            "image_size": gen.model.image_size,
            "g_params": n_params,
            "info": _jsonable(gen.info),
            "limits": {"max_images": MAX_IMAGES, "seed_limit": SEED_LIMIT, "truncation": [0.0, 1.0]},
            "catgan_version": __version__,
        }

    @app.get(
        "/api/cat/{seed}.png",
        summary="One cat by seed",
        response_class=Response,
        responses=PNG_RESPONSES,
    )
    async def cat(request: Request, seed: Seed, truncation: Truncation = 1.0) -> Response:
        return await image_response(
            request,
            "cat",
            {"seed": seed, "truncation": truncation},
            lambda: generate_images(gen, [seed], truncation=truncation)[0],
        )

    @app.get(
        "/api/grid.png",
        summary="A grid of cats, seeds as a comma list with inclusive ranges (0-15,42)",
        response_class=Response,
        responses=PNG_RESPONSES,
    )
    async def grid(
        request: Request,
        seeds: Seeds,
        truncation: Truncation = 1.0,
        nrow: Nrow = None,
    ) -> Response:
        seed_list = parse_seed_list(seeds)
        return await image_response(
            request,
            "grid",
            {"seeds": seed_list, "truncation": truncation, "nrow": nrow},
            lambda: make_grid(generate_images(gen, seed_list, truncation=truncation), nrow=nrow),
        )

    @app.get(
        "/api/interpolate.png",
        summary="The cat at t on the spherical path between the latents of seeds a and b",
        response_class=Response,
        responses=PNG_RESPONSES,
    )
    async def interpolate(
        request: Request,
        a: SeedQ,
        b: SeedQ,
        t: T,
        truncation: Truncation = 1.0,
    ) -> Response:
        def render() -> torch.Tensor:
            za, zb = latents_from_seeds(gen.model, [a, b])  # (z_dim,) each
            z = slerp(za, zb, t) * truncation  # as generate_images truncates: z * psi, toward the mean (0)
            return generate_from_latents(gen, z.reshape(1, -1))[0]

        return await image_response(
            request, "interpolate", {"a": a, "b": b, "t": t, "truncation": truncation}, render
        )

    return app
