#!/usr/bin/env python3
"""Records real client/server Postgres traffic and turns it into seed inputs for the fuzz targets.

    capture.py LISTEN_PORT POSTGRES_PORT OUT_DIR

relays plain TCP, one connection at a time (run clients with sslmode=disable), until SIGINT or
SIGTERM. For every connection it writes the seeds of each target into OUT_DIR/<target>/: the
client's startup packet, its messages after login, the server's login answers, and a relay input
(two-byte split, client bytes, server bytes) as `Fixture::relay` reads it.
"""
import os
import select
import signal
import socket
import struct
import sys


def relay(client, server):
    """Both directions until either side closes; returns (client bytes, server bytes)."""
    sent = {client: bytearray(), server: bytearray()}
    peer = {client: server, server: client}
    open_ = [client, server]
    while len(open_) == 2:
        ready, _, _ = select.select(open_, [], [])
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                open_.remove(sock)
                break
            sent[sock] += data
            peer[sock].sendall(data)
    return bytes(sent[client]), bytes(sent[server])


def split_client(data):
    """(startup packet, messages after login); an SSLRequest answered 'N' is skipped, and so
    are the password/SASL messages of the login."""
    while len(data) >= 8:
        length = struct.unpack(">I", data[:4])[0]
        packet, data = data[:length], data[length:]
        if struct.unpack(">I", packet[4:8])[0] != 80877103:
            while data[:1] == b"p":
                data = data[1 + struct.unpack(">I", data[1:5])[0]:]
            return packet, data
    return data, b""


def split_server(data):
    """(login answers up to the first ReadyForQuery, the rest)."""
    if data[:1] == b"N":
        data = data[1:]
    at = 0
    while at + 5 <= len(data):
        tag = data[at:at + 1]
        length = struct.unpack(">I", data[at + 1:at + 5])[0]
        at += 1 + length
        if tag == b"Z":
            return data[:at], data[at:]
    return data, b""


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def main():
    listen_port, pg_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # A background job ignores SIGINT; SIGTERM ends the capture the same way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    listener = socket.create_server(("127.0.0.1", listen_port))
    count = 0
    try:
        while True:
            client, _ = listener.accept()
            server = socket.create_connection(("127.0.0.1", pg_port))
            from_client, from_server = relay(client, server)
            client.close()
            server.close()
            count += 1
            startup, messages = split_client(from_client)
            login, answers = split_server(from_server)
            name = f"conn-{count:03}"
            write(out, "startup_packet", name, startup)
            write(out, "client_messages", name, messages)
            write(out, "upstream_login", name, login)
            split = min(len(messages), 0xFFFF)
            write(out, "relay", name, struct.pack(">H", split) + messages[:split] + answers)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
