"""The codec server: `/encode` and `/decode` for the Temporal Web UI and CLI (the codec HTTP protocol).

Whoever may call `/decode` reads every decrypted payload, so the server checks its callers itself:

- With a token (CHIPCLEAR_CODEC_TOKEN), every call needs `Authorization: Bearer <token>`; without one,
  it listens on loopback only. The Web UI cannot send a token of its own (its codec settings pass only the
  signed-in user's OIDC token, or cookies), so the dev UI uses a loopback server without one, and a shared
  one sits behind a proxy that authenticates people and adds the header (docs/security.md).
- A call that carries an Origin header must come from one of the UI's origins, or it is refused (403)
  before anything is decoded. CORS alone only stops a browser reading the answer; a page elsewhere could
  still have the server do the work. Browsers send Origin with every POST, so another site's page (or a
  DNS-rebinding one) cannot use the server; the CLI and curl send none and need only the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from chipclear.config import ConfigError
from chipclear.logs import get_logger

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
TOKEN_VARIABLE = "CHIPCLEAR_CODEC_TOKEN"
MIN_TOKEN_LENGTH = 16  # secrets.token_urlsafe(32) gives 43


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """CHIPCLEAR_CODEC_TOKEN, checked; None when unset. A message about it never quotes it."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_VARIABLE) or None
    if token is None:
        return None
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ConfigError(f"{TOKEN_VARIABLE}: use printable ASCII without spaces (it travels in a header)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_VARIABLE}: too short to resist guessing: at least {MIN_TOKEN_LENGTH} characters, "
            f"got {len(token)} (make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1 (any loopback address) or localhost: only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # 0.0.0.0, an interface's address or a host name: reachable from elsewhere


def require_token_beyond_loopback(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host}: the codec server decrypts for whoever reaches it, so beyond loopback "
            f"(127.0.0.1, ::1, localhost) it needs a bearer token in {TOKEN_VARIABLE}"
        )


def build_app(codec: PayloadCodec, *, ui_origins: Sequence[str], token: str | None = None) -> web.Application:
    """The app; with `token`, every /encode and /decode call must carry it (a preflight needs none)."""
    log = get_logger("chipclear.codec_server")
    origins = set(ui_origins)
    expected = None if token is None else token.encode()

    def cors(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = "Origin"

    def authorized(request: web.Request) -> bool:
        if expected is None:
            return True
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        offered = credentials.strip().encode("utf-8", "surrogateescape")
        # Constant time, so the answer's timing does not spell the token out.
        return scheme.lower() == "bearer" and hmac.compare_digest(offered, expected)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin not in origins:
            response = _problem(403, f"origin {origin!r} is not one of the Web UI origins this server serves")
        elif request.method != hdrs.METH_OPTIONS and not authorized(request):
            response = _problem(401, f"a bearer token is required: Authorization: Bearer ${TOKEN_VARIABLE}")
            response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
            cors(request, response)  # so the UI can show why
        else:
            return await handler(request)
        log.warning("codec request refused", path=request.path, origin=origin, status=response.status)
        return response

    async def preflight(request: web.Request) -> web.Response:
        response = web.Response()
        cors(request, response)
        return response

    def handler(transform: Transform, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                payloads = json_format.Parse(await request.text(), Payloads())
            except (json_format.ParseError, UnicodeDecodeError) as exc:
                response = _problem(400, f"body: expected Payloads as protobuf JSON ({exc})")
            else:
                try:
                    result = Payloads(payloads=await transform(payloads.payloads))
                except (KeyError, ValueError) as exc:
                    # An unknown key id, or a payload that fails authentication: the caller's data.
                    response = _problem(400, str(exc).strip("'\""))
                else:
                    response = web.json_response(text=json_format.MessageToJson(result))
            log.info(
                "codec request",
                endpoint=name,
                namespace=request.headers.get("X-Namespace"),
                status=response.status,
            )
            cors(request, response)
            return response

        return handle

    app = web.Application(middlewares=[guard])
    app.router.add_route("OPTIONS", "/{endpoint:(encode|decode)}", preflight)
    app.router.add_post("/encode", handler(codec.encode, "encode"))
    app.router.add_post("/decode", handler(codec.decode, "decode"))
    return app


def _problem(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")


def serve(
    codec: PayloadCodec, *, host: str, port: int, ui_origins: Sequence[str], token: str | None = None
) -> None:
    require_token_beyond_loopback(host, token)
    web.run_app(build_app(codec, ui_origins=ui_origins, token=token), host=host, port=port, print=None)
