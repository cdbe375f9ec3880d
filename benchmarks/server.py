"""The real app plus a discard endpoint, served by uvicorn for the end-to-end upload benchmark."""

from __future__ import annotations

from fastapi import FastAPI, Request

from app.main import create_app


def create_bench_app() -> FastAPI:
    """``create_app()`` with ``PUT /bench/discard``, which reads the body and keeps nothing."""
    app = create_app()

    @app.put("/bench/discard", include_in_schema=False)
    async def discard(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size_bytes": size}

    return app
