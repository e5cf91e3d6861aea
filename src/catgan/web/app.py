"""`catgan serve`'s HTTP app: one static page and a small PNG/JSON API over one loaded generator.

    GET /                                   the page (static/index.html, app.js, style.css; nothing remote)
    GET /api/info                           model name, hash, config and limits, as JSON
    GET /api/cat/{seed}.png                 one cat
    GET /api/grid.png?seeds=0-15,42         a grid of up to 64 cats (comma list, inclusive ranges)
    GET /api/interpolate.png?a=&b=&t=       the cat at t in [0, 1] on the latent path from seed a to seed b
    GET /openapi.json                       the OpenAPI schema (FastAPI's usual path)
    POST /api/project, GET /api/directions, GET /api/edit.png   your own cat: web.own
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
from catgan.generate import LoadedGenerator, generate_from_latents, generate_images
from catgan.images import make_grid
from catgan.sampling import SEED_LIMIT, latents_from_seeds, parse_seeds, slerp
from catgan.web.own import UPLOAD_TYPES, OwnCatLimits
from catgan.web.own import add_routes as add_own_routes
from catgan.web.security import SecureResponses

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_IMAGES = 64  # most images one request may ask for
MAX_SEEDS_TEXT = 1000  # characters in a `seeds` query: enough for 64 ten-digit seeds and commas
CACHE_CONTROL = "public, max-age=86400"  # images are a pure function of model + parameters


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
    """ "0,1,2", "0-15" or "3,10-12" -> seeds: the CLI's grammar (catgan.sampling.parse_seeds), at most
    `limit` of them, its errors as a 400 naming `parameter`. Duplicates are kept (a grid shows what was
    asked for)."""
    if len(text) > MAX_SEEDS_TEXT:
        raise BadParameter(
            parameter, f"{parameter}: too long ({len(text)} characters, at most {MAX_SEEDS_TEXT})"
        )
    try:
        return parse_seeds(text, limit=limit)
    except CatganError as err:
        raise BadParameter(parameter, f"{parameter}: {err}") from None


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


class _Serving:
    """What the routes of one app share: its generator, PNG cache and generation limiter."""

    def __init__(self, gen: LoadedGenerator, max_concurrency: int, max_waiting: int, cache: PngCache):
        self.gen, self.cache, self.max_waiting = gen, cache, max_waiting
        self.limiter = anyio.CapacityLimiter(max_concurrency)  # the semaphore on generation threads
        self.waiting = 0  # requests queued for or inside the limiter

    async def run_limited(self, work: Callable[[], Any]) -> Any:
        """work() in a generation thread, at most max_concurrency at once; 503 when too many wait."""
        if self.waiting >= self.max_waiting:
            raise HTTPException(
                503, "server busy: too many images queued; retry shortly", {"Retry-After": "1"}
            )
        self.waiting += 1
        try:
            return await anyio.to_thread.run_sync(work, limiter=self.limiter)
        finally:
            self.waiting -= 1

    async def image_response(
        self, request: Request, kind: str, params: dict[str, Any], render: Callable[[], torch.Tensor]
    ) -> Response:
        """The PNG of render(): 304 when the client has it, else from the cache or drawn and cached."""
        etag = make_etag(self.gen.sha256, kind, params)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        body = self.cache.get(etag)
        if body is None:
            body = await self.run_limited(lambda: encode_png(render()))
            self.cache.put(etag, body)
        return Response(body, media_type="image/png", headers=headers)


def create_app(
    gen: LoadedGenerator,
    max_concurrency: int = 2,
    max_waiting: int = 64,
    cache_entries: int = 1024,
    cache_bytes: int = 64 * 2**20,
    own: OwnCatLimits | None = None,
    project_config: Any = None,
) -> FastAPI:
    """The app for one generator. All state (cache, limiter, queue count) lives in this instance.
    own: the upload limits of the "your own cat" routes (web.own); project_config: their
    projection.project.ProjectConfig (default: `own.steps` steps, the generator's own encoder)."""
    if max_concurrency < 1:
        raise CatganError(f"max_concurrency must be >= 1, got {max_concurrency}")
    app = FastAPI(
        title="catgan",
        version=__version__,
        description=f"Draw cats with the generator {gen.name!r}.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: the page must stay local
        redoc_url=None,
    )
    app.add_middleware(SecureResponses)  # HEAD as GET without a body; nosniff, CSP on every response
    serving = _Serving(gen, max_concurrency, max_waiting, PngCache(cache_entries, cache_bytes))
    app.state.cache, app.state.limiter = serving.cache, serving.limiter
    own = own or OwnCatLimits()
    _add_error_handlers(app)
    _add_page_routes(app, gen, own)
    _add_drawing_routes(app, serving)
    add_own_routes(app, gen, serving.image_response, serving.run_limited, own, project_config)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as one JSON shape (_error): bad parameters 422, a busy server 503, the rest 500."""

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


def _add_page_routes(app: FastAPI, gen: LoadedGenerator, own: OwnCatLimits) -> None:
    """The page, its static files and /api/info."""
    n_params = sum(p.numel() for p in gen.G.parameters())

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
            "upload": {"max_bytes": own.max_bytes, "types": list(UPLOAD_TYPES), "max_steps": own.max_steps},
            "catgan_version": __version__,
        }


def _add_drawing_routes(app: FastAPI, serving: _Serving) -> None:
    """The seed-drawn images: one cat, a grid, a point on the path between two seeds."""
    gen, image_response = serving.gen, serving.image_response

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
