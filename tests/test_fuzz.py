"""Property-based fuzzing (hypothesis) of catgan's parsers of outside input: no traceback, only clear errors.

- the `.cat` landmark parser and its check against the photo (catgan.data.annotations)
- the seed grammar of --seeds (catgan.sampling.parse_seeds) and the web's `seeds` (it must agree with it)
- the web API's query and path parameters, through FastAPI's test client against a tiny generator
- the generator-file loader on mutated bytes, safetensors headers and metadata (catgan.checkpoint)

A clear error is the module's own exception with a one-line message (CatganError; AnnotationError for a
`.cat` file), or a JSON 4xx for the web. Examples are bounded and derandomised, so CI runs the same ones
every time in seconds; CATGAN_FUZZ_EXAMPLES=N runs N random examples per property instead.

Anything else (a traceback) is raised as `Unclear`, one failure for hypothesis to shrink. The inputs this
fuzz once found tracebacks for stand in FOUND_BY_FUZZ: each must now be refused in one CatganError line.
"""

from __future__ import annotations

import json
import os
import struct
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed: pip install -e '.[test]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve,test]'")

from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from catgan.checkpoint import load_generator_file, tensors_hash  # noqa: E402
from catgan.data.annotations import AnnotationError, parse_cat, validate  # noqa: E402
from catgan.errors import CatganError  # noqa: E402
from catgan.generate import generate_images, load_generator  # noqa: E402
from catgan.sampling import format_seeds, parse_seeds  # noqa: E402
from catgan.web.app import BadParameter, parse_seed_list  # noqa: E402
from test_web_api import export_tiny  # noqa: E402

_RANDOM_N = os.environ.get("CATGAN_FUZZ_EXAMPLES")


def fuzz(n: int):
    """`n` derandomised examples (the same in every run), or CATGAN_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=int(_RANDOM_N) if _RANDOM_N else n,
        derandomize=_RANDOM_N is None,
        deadline=None,
        database=None,  # no example database in the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain" phase
    )


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


class Unclear(Exception):
    """A fuzzed input got a traceback where a clear one-line error was due."""


def clear(call, *args, expected: type[Exception] | tuple[type[Exception], ...] = CatganError):
    """call(*args): its result, or None after a clear one-line error of an `expected` type. Any other
    exception becomes Unclear, naming its type, message and where it was raised (`from None`: hypothesis
    then sees one kind of failure wherever it arose, and shrinks one example)."""
    try:
        return call(*args)
    except expected as err:
        one_line(err)
        return None
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        raise Unclear(f"{type(err).__name__} at {where}: {str(err)[:200]}") from None


# ---- the .cat parser ------------------------------------------------------------------------------

ODD_NUMBERS = ["nan", "-inf", "inf", "1e400", "-0", "9.0", "1_0", "0x10", "١٢", "²", "1e-400", "+9", "--1"]
cat_token = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(ODD_NUMBERS),
    st.text(max_size=6),
)
cat_like = st.lists(cat_token, max_size=24).map(lambda t: " ".join(["9", *t]))


@fuzz(300)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), cat_like))
@example("9 " + " ".join(["1"] * 18))
@example(b"\xff\xfe9 1 2")
@example("9" + " 1e308" * 18)
def test_parse_cat_gives_nine_finite_points_or_one_reason(data):
    landmarks = clear(parse_cat, data, expected=AnnotationError)
    if landmarks is not None:
        assert landmarks.points.shape == (9, 2) and np.isfinite(landmarks.points).all()


finite = st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False)


@fuzz(300)
@given(st.lists(finite, min_size=18, max_size=18), st.integers(1, 10_000), st.integers(1, 10_000))
def test_cat_round_trip_and_validate(values, width, height):
    landmarks = parse_cat("9 " + " ".join(repr(v) for v in values))  # repr: the exact float back
    np.testing.assert_array_equal(landmarks.points, np.asarray(values).reshape(9, 2))
    if clear(lambda: validate(landmarks, width, height) or "accepted", expected=AnnotationError) is None:
        return
    face = landmarks.points[[0, 1, 2]]  # what validate promises of an accepted annotation: eyes, mouth
    assert ((face >= 0) & (face < [width, height])).all()


# ---- the seed grammar -----------------------------------------------------------------------------

seed_item = st.one_of(
    st.integers(0, 2**33).map(str),
    st.tuples(st.integers(0, 2**33), st.integers(0, 2**33)).map(lambda p: f"{p[0]}-{p[1]}"),
    st.text(alphabet="0123456789-, +_.x\t", max_size=6),
)
seed_text = st.one_of(st.lists(seed_item, max_size=6).map(",".join), st.text(max_size=40))


@fuzz(400)
@given(seed_text)
@example("0-4294967295")  # 2^32 seeds: refused before anything is expanded
@example(" 3 , 5-7 ")
def test_parse_seeds_gives_seeds_or_one_line_error(text):
    seeds = clear(parse_seeds, text)
    if seeds is not None:
        assert seeds and all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)


@fuzz(200)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40))
def test_format_seeds_round_trips(seeds):
    assert parse_seeds(format_seeds(seeds)) == seeds


@fuzz(400)
@given(seed_text)
def test_the_web_and_the_cli_read_seeds_alike(text):
    """The web's `seeds` is the --seeds grammar with a 64-image limit: what it accepts, --seeds reads the
    same way."""
    try:
        web = parse_seed_list(text)
    except BadParameter as err:
        assert err.parameter == "seeds" and "\n" not in err.message
        return
    assert parse_seeds(text) == web


# ---- the web API's parameters -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from catgan.web.app import create_app

    gen = load_generator(weights=export_tiny(tmp_path_factory.mktemp("fuzz") / "tiny.safetensors"))
    with TestClient(create_app(gen, cache_entries=0)) as c:  # no cache: every example generates
        yield c


number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-3, 3).map(str),
    st.sampled_from(ODD_NUMBERS + ["0.5", " 0.5", "1.", ".5", "0e0", ""]),
    st.text(max_size=8),
)
seed_param = st.one_of(st.integers(-5, 2**33).map(str), st.sampled_from(ODD_NUMBERS), st.text(max_size=12))


junk_params = st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3)  # ignored extras


def check_answer(r) -> None:
    """A PNG, or a JSON 4xx whose one-line error names a parameter; never a 5xx."""
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
        return
    body = r.json()
    assert "\n" not in body["error"] and "Traceback" not in r.text and len(r.text) < 600
    if r.status_code == 422:
        assert body["parameter"] and body["parameter"] in body["error"]


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


@fuzz(120)
@given(
    seeds=st.one_of(seed_text, st.none()), truncation=st.none() | number_text, nrow=st.none() | number_text
)
def test_grid_parameters(client, seeds, truncation, nrow):
    check_answer(client.get("/api/grid.png", params=_params(seeds=seeds, truncation=truncation, nrow=nrow)))


@fuzz(120)
@given(
    a=st.none() | seed_param,
    b=st.none() | seed_param,
    t=st.none() | number_text,
    truncation=st.none() | number_text,
)
def test_interpolate_parameters(client, a, b, t, truncation):
    params = _params(a=a, b=b, t=t, truncation=truncation)
    check_answer(client.get("/api/interpolate.png", params=params))


@fuzz(150)
@given(seed=seed_param, truncation=st.none() | number_text, junk=junk_params)
def test_cat_path_and_parameters(client, seed, truncation, junk):
    path = "/api/cat/" + urllib.parse.quote(seed, safe="") + ".png"
    check_answer(client.get(path, params={**junk, **_params(truncation=truncation)}))


host_header = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A\[?[0-9a-fA-F:.]{0,20}\]?(:[0-9]{0,6})?\Z"),
    st.from_regex(r"\A[a-zA-Z0-9._-]{0,30}(:[0-9a-z]{0,6})?\Z"),
)


@fuzz(400)
@given(header=host_header, bound=st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "192.168.1.5", "localhost"]))
def test_host_header_check(header, bound):
    """Any Host header: passed, or a 400/421 with one line; a name only ever passes when it is allowed."""
    from catgan.web.security import HostCheck, HostPolicy, host_name

    policy = HostPolicy.for_bind(bound, ["cats.lan"])
    raw = header.encode("latin-1", "replace")  # as the bytes of a request head
    refused = clear(HostCheck(None, policy).refusal, {"type": "http", "headers": [(b"host", raw)]})
    name = clear(host_name, raw.decode("latin-1"))
    if refused is None:
        assert name is not None and policy.allows(name)
    else:
        status, message = refused
        assert status in (400, 421) and "\n" not in message
        assert (status == 400) == (name is None)


# ---- the generator-file loader ------------------------------------------------------------------------


class Exported:
    """A real exported tiny generator: its path and bytes (a short repr: hypothesis prints its arguments)."""

    def __init__(self, path: Path):
        self.path, self.data = path, path.read_bytes()

    def __repr__(self) -> str:
        return f"Exported({self.path.name}, {len(self.data)} bytes)"

    def beside(self, name: str) -> Path:
        return self.path.with_name(name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Exported:
    return Exported(export_tiny(tmp_path_factory.mktemp("fuzz-gen") / "tiny.safetensors"))


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header JSON, tensor bytes) of a safetensors file: an 8-byte little-endian length, JSON, data."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def load_or_refuse(path: Path, data: bytes, build: bool = False) -> None:
    """The loader (and, with `build`, load_generator and one image) gives a result or a CatganError."""
    path.write_bytes(data)
    if clear(load_generator_file, path) is not None and build:
        gen = clear(lambda: load_generator(weights=path))
        if gen is not None:
            assert clear(generate_images, gen, [0]).dtype == torch.uint8


@fuzz(150)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 10**6),
    tail=st.binary(max_size=16),
)
def test_loader_on_damaged_bytes(exported, flips, cut, tail):
    damaged = bytearray(exported.data)
    for pos, value in flips:
        damaged[pos % len(damaged)] = value
    damaged = bytes(damaged[: cut % (len(damaged) + 1)] if cut is not None else damaged) + tail
    load_or_refuse(exported.beside("damaged.safetensors"), damaged)


json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@fuzz(150)
@given(
    name=st.sampled_from(["dtype", "shape", "data_offsets", "extra"]),
    value=json_value | st.sampled_from(["F64", "I8", "BOOL", "Q4"]) | st.lists(st.integers(-2, 2**40)),
    which=st.integers(0, 100),
    size=st.none() | st.integers(0, 2**64 - 1),
)
def test_loader_on_mutated_tensor_headers(exported, name, value, which, size):
    header, body = split_safetensors(exported.data)
    names = sorted(k for k in header if k != "__metadata__")
    header[names[which % len(names)]][name] = value
    mutated = join_safetensors(header, body)
    if size is not None:  # a header length that lies
        mutated = struct.pack("<Q", size) + mutated[8:]
    load_or_refuse(exported.beside("header.safetensors"), mutated)


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    return [path]


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    return {**value, path[0]: _replace(value[path[0]], path[1:], new)}


CONFIG_KEYS = ("generator_config", "model_config")  # the metadata text the sha256 covers (v2, v1 files)
small_value = st.one_of(  # ints stay small: a refused size must not be a test that allocates gigabytes
    st.integers(-3, 64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, None, "", "dcgan", [], {}, [16], {"a": 1}, 1.5, 16.0]),
    st.text(max_size=8),
)


def edited(exported: Exported, leaf: tuple | None = None, value: Any = None, provenance: Any = None) -> bytes:
    """The file with one config leaf set to `value` (or its provenance replaced) and its sha256 recomputed,
    as a careful forger would: the hash then matches, so the loader must judge the config itself."""
    from safetensors.torch import load, save

    meta = dict(split_safetensors(exported.data)[0]["__metadata__"])
    key = next(k for k in CONFIG_KEYS if k in meta)
    tensors = load(exported.data)
    if leaf is not None:
        meta[key] = json.dumps(_replace(json.loads(meta[key]), leaf, value), sort_keys=True)
    if provenance is not None:
        meta["provenance"] = json.dumps(provenance)  # (the hash does not cover it)
    meta["sha256"] = tensors_hash(tensors, meta[key])
    return save(tensors, metadata=meta)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # (from libcst, which writes hypothesis' patch)
@fuzz(150)
@given(which=st.integers(0, 1000), value=small_value, field=st.sampled_from(["config", "provenance"]))
def test_loader_and_build_on_edited_config_with_its_hash_recomputed(exported, which, value, field):
    if field == "config":
        leaves = _leaves(json.loads(split_safetensors(exported.data)[0]["__metadata__"][CONFIG_KEYS[0]]))
        data = edited(exported, leaves[which % len(leaves)], value)
    else:
        data = edited(exported, provenance={"step": value} if which % 2 else value)
    load_or_refuse(exported.beside("edited.safetensors"), data, build=True)


METADATA_KEYS = ["format", *CONFIG_KEYS, "sha256", "provenance", "catgan_version"]


@fuzz(100)
@given(key=st.sampled_from(METADATA_KEYS), text=st.text())
def test_loader_on_edited_metadata_text(exported, key, text):
    from safetensors.torch import load, save

    meta = dict(split_safetensors(exported.data)[0]["__metadata__"])
    meta[key] = text
    load_or_refuse(exported.beside("meta.safetensors"), save(load(exported.data), metadata=meta))


# ---- what this fuzz found ----------------------------------------------------------------------------

FOUND_BY_FUZZ = [  # (what, argument): each a traceback where one line was due, when this fuzz found it
    pytest.param("seeds", "²", id="seeds-superscript-digit"),  # str.isdigit() takes it, int() does not
    pytest.param("seeds", "1-" + "9" * 5000, id="seeds-5000-digits"),  # int()'s 4300-digit limit
    pytest.param("config", (("family",), []), id="config-family-list"),  # TypeError: unhashable
    pytest.param("config", (("init_std",), -1.0), id="config-negative-init-std"),  # RuntimeError in normal_
    pytest.param("provenance", 0, id="provenance-number"),  # AttributeError: .get on an int
    pytest.param("provenance", [], id="provenance-list"),
]


@pytest.mark.parametrize("what, arg", FOUND_BY_FUZZ)
def test_inputs_the_fuzz_found_are_refused_in_one_line(exported, what, arg):
    if what == "seeds":
        with pytest.raises(CatganError) as info:
            parse_seeds(arg)
        one_line(info.value)
        return
    path = exported.beside("found.safetensors")
    path.write_bytes(edited(exported, *arg) if what == "config" else edited(exported, provenance=arg))
    # refused by the file loader or, at the latest, when the generator is built: never a working one
    with pytest.raises(CatganError) as info:
        load_generator_file(path)
        load_generator(weights=path)
    one_line(info.value)
