"""A tiny HTTP server that reports the service status."""
import argparse
import http.server

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8731
REQUEST_TIMEOUT = 30
MAX_BODY_BYTES = 65536


class StatusHandler(http.server.BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    server = http.server.HTTPServer((args.host, args.port), StatusHandler)
    print(f"listening on {args.host}:{args.port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
