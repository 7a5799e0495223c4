"""A real S3 API for the tests: moto's server on 127.0.0.1, and a proxy that injects faults."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SECRET = "medallion-test-secret-9f3a7c"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, proc) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)


class MotoS3:
    """moto's server in its own process on 127.0.0.1.

    Not ThreadedMotoServer: some delta-rs calls (``DeltaTable.is_deltatable``) hold the GIL
    while they wait for S3, so a server thread in the same process would never answer.
    """

    def __init__(self, *, check_credentials: bool = False) -> None:
        import os
        import subprocess
        import sys

        port = _free_port()
        env = dict(os.environ)
        if check_credentials:  # moto then refuses keys its IAM does not know (403)
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        code = (
            "import logging, sys; logging.getLogger('werkzeug').setLevel(logging.ERROR);"
            "from moto.server import ThreadedMotoServer;"
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start();"
            "sys.stdin.read()"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        _wait_for(f"{self.endpoint}/moto-api/", self.proc)

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).read()

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        e = self.env()
        return boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=SECRET, region_name="us-east-1")

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


class FaultProxy:
    """Forwards HTTP to ``target``; the first ``fail_first`` requests get a 503 instead.

    ``lose_commit_acks``: the first N PUTs of a Delta commit (``_delta_log/<version>.json``)
    reach ``target`` and are stored, then their reply is lost: ``lose="close"`` closes the
    connection without answering, ``lose="503"`` answers 503 instead of the store's 200.
    ``fail_puts_matching``: a regular expression; the first ``fail_puts`` PUTs whose path
    matches it get S3's 409 OperationAborted ("try again"), which botocore and s3fs pass
    on at once (they retry 5xx themselves), so each one reaches medallion's retry loop.
    Runs in its own process (see MotoS3 for why); ``stats()`` reads its counters.
    """

    def __init__(self, target: str, fail_first: int = 0, *, lose_commit_acks: int = 0, lose: str = "close",
                 fail_puts_matching: str = "", fail_puts: int = 0) -> None:
        import subprocess
        import sys

        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, __file__, target, str(fail_first), str(port), str(lose_commit_acks), lose,
                                      fail_puts_matching, str(fail_puts)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(f"{self.endpoint}/__stats", self.proc)

    def stats(self) -> dict:
        import json
        import urllib.request

        return json.loads(urllib.request.urlopen(f"{self.endpoint}/__stats", timeout=5).read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _serve(target_url: str, fail_first: int, port: int, lose_commit_acks: int = 0, lose: str = "close",
           fail_puts_matching: str = "", fail_puts: int = 0) -> None:
    import json
    import re

    target = urlsplit(target_url)
    state = {"seen": 0, "failed": 0, "commits": 0, "acks_lost": 0, "puts_failed": 0}
    matching = re.compile(fail_puts_matching) if fail_puts_matching else None
    commit = re.compile(r"/_delta_log/\d{20}\.json$")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _reply(self, status: int, payload: bytes, ctype: str = "application/xml") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _handle(self) -> None:
            if self.path == "/__stats":
                return self._reply(200, json.dumps(state).encode(), "application/json")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with lock:
                state["seen"] += 1
                fail = state["failed"] < fail_first
                aborted = False
                if fail:
                    state["failed"] += 1
                elif (matching is not None and self.command == "PUT" and state["puts_failed"] < fail_puts
                      and matching.search(urlsplit(self.path).path)):
                    aborted = True
                    state["puts_failed"] += 1
            if aborted:
                return self._reply(409, b"<Error><Code>OperationAborted</Code><Message>A conflicting conditional "
                                        b"operation is currently in progress. Please try again.</Message></Error>")
            if fail:
                return self._reply(503, b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>")
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = target.netloc
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if self.command == "PUT" and commit.search(urlsplit(self.path).path) and resp.status == 200:
                with lock:
                    state["commits"] += 1
                    drop = state["acks_lost"] < lose_commit_acks
                    if drop:
                        state["acks_lost"] += 1
                if drop and lose == "503":
                    return self._reply(503, b"<Error><Code>ServiceUnavailable</Code><Message>ack lost</Message></Error>")
                if drop:  # the commit is stored; the client never hears of it
                    self.close_connection = True
                    import socket

                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    import sys

    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7]))
