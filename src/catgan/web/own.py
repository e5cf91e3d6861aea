"""`catgan serve`'s "your own cat" API: project an uploaded photo, then edit and morph it.

    POST /api/project?align=detect|crop&steps=N   the photo as the raw request body (image/png, image/jpeg,
                                                  image/webp); JSON: the latent, the aligned face and the
                                                  generator's drawing (PNG data URLs), PSNR, seconds
    GET  /api/directions                          the latent directions (SeFa) and what each changes
    GET  /api/edit.png?z=&d=&morph=&t=            the cat of latent z moved along directions d
                                                  ("0:1.5,3:-2": index:amount in latent std units), then
                                                  t of the way toward seed `morph`'s cat

Nothing of an upload is kept: the body is read into memory (never a multipart temp file), decoded,
projected and dropped with the request. The latent lives in the page; it comes back in each edit
request as base64url float32 (little-endian), so the edit images are plain cacheable GETs (ETags, 304s)
and a download is a link. The upload's body is capped while it is read (413 above the cap, with or
without Content-Length); the Content-Type must name an image: an HTML form cannot send one, and a
cross-origin script would need a CORS preflight that this server never grants.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from catgan.errors import CatganError
from catgan.generate import LoadedGenerator, generate_from_latents
from catgan.sampling import SEED_LIMIT, latents_from_seeds, slerp

UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_AMOUNT = 10.0  # |amount| per direction, in latent std units
MAX_LATENT = 1e3  # |z_i|: far outside any latent a projection finds
_D_ITEM = re.compile(r"^([0-9]{1,4}):(-?[0-9]{1,3}(?:\.[0-9]{1,6})?)$")


AlignQ = Annotated[
    str, Query(pattern="^(detect|crop)$", description="find the face, or take the photo as a crop")
]
StepsQ = Annotated[
    int | None, Query(ge=0, le=10_000, description="optimisation steps (default: the server's)")
]
LatentQ = Annotated[str, Query(max_length=16_384, description="the latent: base64url float32 little-endian")]
MovesQ = Annotated[str, Query(max_length=2000, description="index:amount,... in latent std units")]
MorphQ = Annotated[int | None, Query(ge=0, lt=SEED_LIMIT, description="a seed to morph toward")]
TQ = Annotated[float, Query(ge=0.0, le=1.0, description="0 = your cat, 1 = the seed's")]


@dataclass(frozen=True)
class OwnCatLimits:
    """What an upload may be and how hard the server works on it."""

    max_bytes: int = 10 * 2**20  # the request body
    max_pixels: int = 40_000_000  # the decoded photo (a decompression bomb above)
    steps: int = 100  # optimisation steps by default
    max_steps: int = 500


class UploadError(Exception):
    """A refused upload: status and a one-line message."""

    def __init__(self, status: int, message: str, parameter: str = "body"):
        super().__init__(message)
        self.status, self.message, self.parameter = status, message, parameter


def encode_latent(z: torch.Tensor) -> str:
    """(z_dim,) or (1, z_dim) -> base64url of float32 little-endian, without padding."""
    raw = z.detach().cpu().to(torch.float32).reshape(-1).numpy().astype("<f4").tobytes()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_latent(text: str, z_dim: int) -> torch.Tensor:
    """encode_latent's inverse, checked: (1, z_dim) float32. Raises ValueError with a one-line reason."""
    if len(text) > 8 * z_dim + 8:
        raise ValueError(f"too long for a latent of {z_dim} numbers")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != 4 * z_dim:
        raise ValueError(f"holds {len(raw) // 4} numbers, this generator's latent has {z_dim}")
    z = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32)).reshape(1, z_dim)
    if not torch.isfinite(z).all() or z.abs().max() > MAX_LATENT:
        raise ValueError(f"holds NaN, infinite or huge values (|z| > {MAX_LATENT:g})")
    return z


def parse_moves(text: str, count: int) -> list[tuple[int, float]]:
    """ "0:1.5,3:-2" -> [(0, 1.5), (3, -2.0)]; indices below `count`, |amount| <= MAX_AMOUNT."""
    if not text:
        return []
    moves = []
    for item in text.split(",")[:65]:
        m = _D_ITEM.match(item.strip())
        if m is None:
            raise ValueError(f"{item.strip()[:30]!r} is not index:amount, e.g. 0:1.5,3:-2")
        k, a = int(m.group(1)), float(m.group(2))
        if k >= count:
            raise ValueError(f"direction {k} does not exist (0-{count - 1})")
        if abs(a) > MAX_AMOUNT:
            raise ValueError(f"amount {a:g} is outside [-{MAX_AMOUNT:g}, {MAX_AMOUNT:g}]")
        moves.append((k, a))
    return moves


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, at most max_bytes (413 beyond, counted as it arrives), into memory only."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, f"photo too large: {int(declared):,} bytes, at most {max_bytes:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadError(413, f"photo too large: over {max_bytes:,} bytes")
        chunks.append(chunk)
    if size == 0:
        raise UploadError(422, "no photo: the request body is empty")
    return b"".join(chunks)


def png_data_url(image: torch.Tensor) -> str:
    from catgan.web.app import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode()


def aligned_face(
    data: bytes, size: int, align_mode: str, limits: OwnCatLimits
) -> tuple[torch.Tensor, list[str]]:
    """Bytes -> the aligned face uint8 (3, size, size) and notes; UploadError for what is not a cat photo."""
    from catgan.data import align
    from catgan.data.photo import decode
    from catgan.data.sources import BadInput
    from catgan.projection.face import resample

    try:
        image, notes = decode(data, limits.max_pixels, apply_exif=True)  # (H, W, 3) uint8
    except BadInput as err:
        raise UploadError(422, f"photo refused: {err.detail}") from None
    h, w = image.shape[:2]
    try:
        if align_mode == "crop":
            box = align.square_box(w, h, "crop")
        else:
            from catgan.projection.detect import FaceDetector

            box = FaceDetector.load().face_box(image)
        face = resample(image, box, size, notes)  # (size, size, 3)
    except CatganError as err:
        hint = " (or tick 'the photo is a face crop')" if align_mode == "detect" else ""
        raise UploadError(422, f"{str(err).splitlines()[0]}{hint}") from None
    return torch.from_numpy(face.copy()).permute(2, 0, 1), notes


class _OwnCat:
    """What the own-cat routes share: the generator, the limits, and the Projector and SeFa directions,
    each made on first use."""

    def __init__(self, gen: LoadedGenerator, limits: OwnCatLimits, project_config: Any = None):
        self.gen, self.limits, self.project_config = gen, limits, project_config
        self._projector: Any = None
        self._directions: Any = None

    def projector(self) -> Any:
        if self._projector is None:
            from catgan.projection.project import ProjectConfig, Projector

            config = self.project_config or ProjectConfig(steps=self.limits.steps)
            self._projector = Projector(self.gen, config)
        return self._projector

    def directions(self) -> Any:
        if self._directions is None:
            self._directions = self.gen.directions()
        return self._directions

    def project(self, data: bytes, align: str, steps: int | None) -> dict[str, Any]:
        """The /api/project answer for the uploaded bytes `data` (runs in a generation thread)."""
        import dataclasses

        face, notes = aligned_face(data, self.gen.model.image_size, align, self.limits)  # (3, S, S) uint8
        p = self.projector()
        if steps is not None and steps != p.config.steps:
            p = type(p)(self.gen, dataclasses.replace(p.config, steps=steps), encoder=p.encoder)
        result = p.project(face)
        err = float((result.image.double() - face.double()).pow(2).mean())
        return {
            "latent": encode_latent(result.latent),
            "aligned": png_data_url(face),
            "projected": png_data_url(result.image),
            "psnr": round(10 * math.log10(255**2 / max(err, 1e-10)), 2),
            "seconds": round(result.seconds, 2),
            "notes": [*notes, *result.notes],
        }

    def edited(self, latent: torch.Tensor, moves, found, morph: int | None, t: float) -> torch.Tensor:
        """The (3, S, S) image of `latent` (1, z_dim) moved along the directions `moves` ((index,
        amount in latent stds) pairs), then morphed a share t of the way to seed `morph`'s latent."""
        w = latent.clone()
        for k, a in moves:
            w += a * found.latent_std * found.items[k].vector
        if morph is not None and t > 0:
            target = latents_from_seeds(self.gen.model, [morph])
            w = slerp(w, target, t) if t < 1 else target
        return generate_from_latents(self.gen, w)[0]


def _directions_json(found: Any) -> dict[str, Any]:
    fields = ("index", "label", "eigenvalue", "change", "effects")
    items = [{name: getattr(d, name) for name in fields} for d in found.items]
    return {"method": "sefa", "latent_std": found.latent_std, "max_amount": MAX_AMOUNT, "directions": items}


def add_routes(
    app: FastAPI,
    gen: LoadedGenerator,
    image_response: Callable[..., Awaitable[Response]],
    run_limited: Callable[[Callable[[], Any]], Awaitable[Any]],
    limits: OwnCatLimits,
    project_config: Any = None,
) -> None:
    """The routes above on `app` (create_app's image_response and its generation limiter)."""
    own = _OwnCat(gen, limits, project_config)

    @app.exception_handler(UploadError)
    async def _refused(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "parameter": exc.parameter}, status_code=exc.status)

    @app.get("/api/directions", summary="Latent directions (SeFa), named by what they measurably change")
    async def list_directions() -> dict[str, Any]:
        return _directions_json(await run_limited(own.directions))

    @app.post(
        "/api/project",
        summary="Project a photo (the raw body: PNG, JPEG or WebP) into the generator",
        responses={413: {"description": "photo too large"}, 415: {"description": "not an image type"}},
    )
    async def project(request: Request, align: AlignQ = "detect", steps: StepsQ = None) -> dict[str, Any]:
        if steps is not None and steps > limits.max_steps:
            raise UploadError(422, f"steps: at most {limits.max_steps}, got {steps}", "steps")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in UPLOAD_TYPES:
            raise UploadError(
                415, f"send the photo as {', '.join(UPLOAD_TYPES)}, not {kind[:40] or 'no type'}"
            )
        data = await read_body(request, limits.max_bytes)
        return await run_limited(lambda: own.project(data, align, steps))

    @app.get(
        "/api/edit.png", summary="A projected (or any) latent, edited and morphed", response_class=Response
    )
    async def edit(
        request: Request, z: LatentQ, d: MovesQ = "", morph: MorphQ = None, t: TQ = 0.0
    ) -> Response:
        from catgan.web.app import BadParameter

        try:
            latent = decode_latent(z, gen.model.z_dim)  # (1, z_dim)
        except ValueError as err:
            raise BadParameter("z", f"z: {err}") from None
        found = await run_limited(own.directions)
        try:
            moves = parse_moves(d, len(found.items))
        except ValueError as err:
            raise BadParameter("d", f"d: {err}") from None
        params = {"z": z, "d": moves, "morph": morph, "t": t if morph is not None else 0.0}
        return await image_response(
            request, "edit", params, lambda: own.edited(latent, moves, found, morph, t)
        )
