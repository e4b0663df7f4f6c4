"""The web service of this example for a local run: `python3 server.py VERSION ADDRESS`."""
import http.server
import sys

version = sys.argv[1] if len(sys.argv) > 1 else "v1"
address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"web {version} path={self.path} host={self.headers.get('host')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-version", version)
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((address, 8080), Handler).serve_forever()
