"""The codec server: `/encode` and `/decode` for the Temporal Web UI and CLI (the codec HTTP protocol).

The UI sends payloads as protobuf JSON and shows whatever comes back, so only people who can reach
this server (and so the keys) see decrypted inputs; everyone else sees ciphertext. CORS allows the
UI's origin alone.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from chipclear.logs import get_logger

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


def build_app(codec: PayloadCodec, *, ui_origins: Sequence[str]) -> web.Application:
    log = get_logger("chipclear.codec_server")
    origins = set(ui_origins)

    def cors(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = "Origin"

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

    app = web.Application()
    app.router.add_route("OPTIONS", "/{endpoint:(encode|decode)}", preflight)
    app.router.add_post("/encode", handler(codec.encode, "encode"))
    app.router.add_post("/decode", handler(codec.decode, "decode"))
    return app


def _problem(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")


def serve(codec: PayloadCodec, *, host: str, port: int, ui_origins: Sequence[str]) -> None:
    web.run_app(build_app(codec, ui_origins=ui_origins), host=host, port=port, print=None)
