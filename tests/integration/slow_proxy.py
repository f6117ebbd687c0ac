"""A slow network in front of a real model server: predictions are forwarded after a delay.

    python -m tests.integration.slow_proxy --port P --target http://127.0.0.1:8082 --delay-s 3

Every POST (a prediction) waits ``--delay-s`` before it is forwarded; GETs
(readiness) go through at once, so the server is ready but slow to answer.
Binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx
from aiohttp import web

from connectors.process import ServiceProcess, free_port, wait_until


def app(target: str, delay_s: float) -> web.Application:
    client = httpx.AsyncClient(base_url=target, timeout=60)

    async def forward(request: web.Request) -> web.Response:
        if request.method == "POST":
            await asyncio.sleep(delay_s)  # the fault this proxy injects
        answer = await client.request(
            request.method,
            request.rel_url.path_qs,
            content=await request.read(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", forward)
    return application


def start(run_dir: Path, name: str, target: str, delay_s: float) -> tuple[ServiceProcess, str]:
    """This proxy as a process in front of ``target``; returns it and its URL once it answers."""
    port = free_port()
    proc = ServiceProcess(name, run_dir, marker=f"--port {port}")
    argv = [sys.executable, "-m", "tests.integration.slow_proxy", "--port", str(port)]
    proc.start([*argv, "--target", target, "--delay-s", str(delay_s)])
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            httpx.get(f"{url}/", timeout=2.0)
        except httpx.HTTPError:
            return False
        return True

    wait_until(answers, timeout_s=60, what=name)
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay-s", type=float, default=3.0)
    args = parser.parse_args()
    web.run_app(app(args.target, args.delay_s), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
