"""hello-service: serves this folder over HTTP; GET or HEAD /health answers
200 "ok" itself. (python's folder listing would answer /health with a 301
to /health/, which a load balancer's health check counts as a failure.)"""
import functools
import http.server
import os
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def _health(self, body):
        if self.path.split("?", 1)[0] != "/health":
            return False
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        if body:
            self.wfile.write(b"ok\n")
        return True

    def _slow(self):
        # GET /slow?seconds=N (at most 10): the page, after N seconds; what
        # `porter local load --slow-percent` sends, a request in flight
        # through a cutover.
        path, _, query = self.path.partition("?")
        if path != "/slow":
            return False
        seconds = 1.0
        for part in query.split("&"):
            if part.startswith("seconds="):
                try:
                    seconds = min(max(float(part[8:]), 0.0), 10.0)
                except ValueError:
                    pass
        time.sleep(seconds)
        self.path = "/"
        super().do_GET()
        return True

    def do_GET(self):
        if not self._health(True) and not self._slow():
            super().do_GET()

    def do_HEAD(self):
        if not self._health(False):
            super().do_HEAD()


port = int(os.environ.get("PORT", "8080"))
root = os.path.dirname(os.path.abspath(__file__))
server = http.server.ThreadingHTTPServer(("", port), functools.partial(Handler, directory=root))
print(f"hello-service on :{port}", file=sys.stderr, flush=True)
server.serve_forever()
