"""The two HTTP services of the tracing example (Python standard library only).

    python3 app.py back  PORT
    python3 app.py front PORT BACK_URL [REDIS_HOST:PORT]

`back` answers with the trace context it received. `front` calls `back`, copying the trace
headers of the incoming request onto the outgoing one (what every application in an Istio
mesh must do: the sidecars create the spans, the application carries the context across),
and, when given a Redis address, reads the key `greeting` there.
"""
import http.client
import http.server
import socket
import sys
import urllib.parse

# The headers Istio asks applications to forward (reference section 7).
TRACE_HEADERS = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
)


def redis_get(address, key):
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        k = key.encode()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        reply = s.recv(65536)
    if reply.startswith(b"$-1"):
        return None
    if reply.startswith(b"$"):
        return reply.split(b"\r\n")[1].decode(errors="replace")
    return reply.decode(errors="replace").strip()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if ROLE == "back":
            seen = self.headers.get("traceparent", "-")
            self.reply(200, f"back path={self.path} traceparent={seen}\n")
            return
        forwarded = {h: self.headers[h] for h in TRACE_HEADERS if self.headers.get(h)}
        url = urllib.parse.urlsplit(BACK)
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
            conn.request("GET", self.path, headers=forwarded)
            answer = conn.getresponse()
            back = answer.read().decode(errors="replace")
            code = answer.status
            conn.close()
        except OSError as e:
            back, code = f"back unreachable: {e}\n", 502
        text = f"front -> {back}"
        if REDIS:
            try:
                text += f"redis greeting={redis_get(REDIS, 'greeting')}\n"
            except OSError as e:
                text += f"redis unreachable: {e}\n"
        self.reply(code, text)

    def log_message(self, *args):
        pass


ROLE = sys.argv[1] if len(sys.argv) > 1 else "back"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
BACK = sys.argv[3] if len(sys.argv) > 3 else "http://back:8080"
REDIS = sys.argv[4] if len(sys.argv) > 4 else ""

http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
