"""A tiny server that follows the runtime contract (standard library only, so it runs in a bare
Python image as well as on the host): listens on $DUCKSERVE_HOST:$DUCKSERVE_PORT, writes the bound
port to $DUCKSERVE_PORT_FILE when set, answers /ready after DELAY seconds, /env/<NAME> with an
environment variable, and writes a file into $DUCKSERVE_EXCHANGE_DIR when it has one.

    python contract_server.py [DELAY] [EXIT_CODE_AFTER_SECONDS:CODE]
"""

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
started = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/env/"):
            body, status = os.environ.get(self.path[5:], "").encode(), 200
        else:
            ready = self.path == "/ready" and time.monotonic() - started >= delay
            body, status = (b"ok", 200) if ready else (b"starting", 503)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if len(sys.argv) > 2:  # end on our own after a while, with the given code
    after, code = sys.argv[2].split(":")
    threading.Timer(float(after), lambda: os._exit(int(code))).start()

server = ThreadingHTTPServer((os.environ.get("DUCKSERVE_HOST", "127.0.0.1"), int(os.environ.get("DUCKSERVE_PORT", 0))),
                             Handler)
exchange = os.environ.get("DUCKSERVE_EXCHANGE_DIR")
if exchange:
    with open(os.path.join(exchange, "hello.txt"), "w") as fh:
        fh.write("from the instance")
port_file = os.environ.get("DUCKSERVE_PORT_FILE")
if port_file:
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
print(f"listening on port {server.server_address[1]} as {os.environ.get('DUCKSERVE_INSTANCE')}", flush=True)
server.serve_forever()
