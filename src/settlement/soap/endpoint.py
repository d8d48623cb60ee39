"""The SOAP routes of the service: POST /soap (any dialect, found by the body element), POST /soap/{dialect},
GET /soap?wsdl (the standard dialect), GET /soap/{dialect}?wsdl and the schemas the WSDLs import."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from settlement.bootstrap import Application
from settlement.problems import problem_body
from settlement.services.auth import CredentialsWatch, credentials_watch
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.soap_access import SoapPrincipals
from settlement.soap.address import PublicAddress
from settlement.soap.gateway import Answer, AsyncIo, Gateway, fault
from settlement.soap.xmlsafe import Limits, XmlRejected

DEFAULT_DIALECT = "standard"


def add_soap_routes(app: FastAPI, application: Application, io: AsyncIo | None = None,
                    watch: CredentialsWatch | None = None) -> Gateway:
    """`io`: the web application's pools on PostgreSQL; the pipeline then runs on the event loop. `watch`: the
    worker's view of the credentials generation, shared with the REST keys' cache."""
    settings = application.settings
    limits = Limits(settings.soap_max_body_bytes, settings.soap_max_depth)
    watch = watch or credentials_watch(application.context)
    # Read by each WSDL request from the app's state, where a test may put the naive variant.
    app.state.soap_address = PublicAddress.configured(settings.public_url, settings.allowed_hosts, settings.host,
                                                      settings.port)
    gateway = Gateway(application.context, application.dialects,
                      SoapPrincipals(application.context, application.cipher, watch), limits,
                      timedelta(seconds=settings.wsse_window_seconds), settings.soap_log_max_chars,
                      settings.soap_offload_bytes)

    async def read_limited(request: Request) -> bytes:
        """The body, refused as soon as it passes the limit: an oversized upload is never held in memory."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limits.max_bytes:
            raise XmlRejected(ServiceCode.XML_TOO_LARGE, f"the body is larger than {limits.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise XmlRejected(ServiceCode.XML_TOO_LARGE, f"the body is larger than {limits.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def post(request: Request, dialect: str | None) -> Response:
        try:
            raw = await read_limited(request)
        except XmlRejected as error:
            answer = fault(error)
        else:
            content_type = request.headers.get("content-type")
            content_encoding = request.headers.get("content-encoding")
            if io is not None:
                answer = await gateway.handle_async(raw, content_type, content_encoding, dialect, io)
            else:
                answer = await run_in_threadpool(gateway.handle, raw, content_type, content_encoding, dialect)
        return respond(answer)

    def respond(answer: Answer) -> Response:
        return Response(answer.body, status_code=answer.status, media_type=None,
                        headers={"Content-Type": answer.content_type})

    def not_found(detail: str) -> Response:
        status, body = problem_body(ServiceError(ServiceCode.NOT_FOUND, detail))
        return JSONResponse(body, status_code=status, media_type="application/problem+json")

    def wsdl(request: Request, name: str) -> Response:
        dialect = application.dialects.get(name)
        if dialect is None:
            return not_found("no such dialect")
        public: PublicAddress = request.app.state.soap_address
        base = public.base(request.headers.get("host"), request.url.scheme)
        address = f"{base}/soap" if name == DEFAULT_DIALECT else f"{base}/soap/{name}"
        return Response(dialect.wsdl(address, f"{base}/soap/{name}/files"), media_type="text/xml; charset=utf-8")

    @app.get("/soap", tags=["soap"], include_in_schema=False)
    def soap_wsdl(request: Request) -> Response:
        """The standard dialect's WSDL (`GET /soap?wsdl`)."""
        return wsdl(request, DEFAULT_DIALECT)

    @app.get("/soap/{name}", tags=["soap"], include_in_schema=False)
    def dialect_wsdl(request: Request, name: str) -> Response:
        return wsdl(request, name)

    @app.get("/soap/{name}/files/{file}", tags=["soap"], include_in_schema=False)
    def dialect_file(name: str, file: str) -> Response:
        dialect = application.dialects.get(name)
        data = dialect.served_file(file) if dialect is not None else None
        if data is None:
            return not_found("no such dialect or file")
        return Response(data, media_type="text/xml; charset=utf-8")

    @app.post("/soap", tags=["soap"], include_in_schema=False)
    async def soap_any(request: Request) -> Response:
        return await post(request, None)

    @app.post("/soap/{name}", tags=["soap"], include_in_schema=False)
    async def soap_dialect(request: Request, name: str) -> Response:
        return await post(request, name)

    return gateway
