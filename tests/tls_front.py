#!/usr/bin/env python3
"""A TLS front for guerite's TLS tests (tests/tls.rs), serving a Docker engine's unix socket on
127.0.0.1 as `dockerd --tlsverify` serves its TCP port: the server certificate given, and a
client certificate signed by --client-ca required. The port (free, chosen by the kernel) is the
first line on stdout; each session (new or resumed) and each handshake failure is logged on
stderr. Stopped by its pid.

Python's ssl sets a session id context, so session resumption works with client verification
(socat's OPENSSL-LISTEN sets none and fails every resumed handshake), and guerite opens a new
connection for every request.
"""

import argparse
import select
import socket
import ssl
import sys
import threading


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its key (PEM)")
    parser.add_argument("--client-ca", required=True, help="CA the client certificate must chain to")
    parser.add_argument("--upstream", required=True, help="the engine's unix socket")
    parser.add_argument("--tls12", action="store_true", help="offer TLS 1.2 at most")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.load_verify_locations(args.client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    if args.tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(context, conn, args.upstream), daemon=True).start()


def serve(context, conn, upstream):
    conn.settimeout(30)
    tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
    except (ssl.SSLError, OSError) as e:
        print(f"tls_front: handshake failed: {e}", file=sys.stderr, flush=True)
        # Closed at once, as dockerd does: with TLS 1.3 the client's first request is already
        # here, so the kernel resets the connection, after the alert the client must read.
        tls.close()
        return
    # Logged so that the tests can tell that resumption was exercised.
    kind = "resumed" if tls.session_reused else "new"
    print(f"tls_front: {kind} session, {tls.version()}", file=sys.stderr, flush=True)
    try:
        forward(tls, upstream)
    except OSError as e:
        print(f"tls_front: forwarding failed: {e}", file=sys.stderr, flush=True)
    finally:
        tls.close()


def forward(tls, upstream):
    engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    engine.connect(upstream)
    # Non-blocking TLS reads: a readable socket may hold only part of a record, and a blocking
    # read would then wait while the engine's answer is ready.
    tls.setblocking(False)
    client_open = True
    try:
        while True:
            if client_open and tls.pending():
                readable = [tls]
            else:
                watched = [engine] + ([tls] if client_open else [])
                readable, _, _ = select.select(watched, [], [], 300)
                if not readable:
                    return
            if tls in readable:
                try:
                    data = tls.recv(65536)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLError, OSError):
                    data = b""
                if data:
                    engine.sendall(data)
                elif data == b"":
                    client_open = False
                    engine.shutdown(socket.SHUT_WR)
            if engine in readable:
                data = engine.recv(65536)
                if not data:
                    return
                tls.setblocking(True)
                tls.sendall(data)
                tls.setblocking(False)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
