"""A client whose host will vanish mid-statement: `half_statement.py HOST PORT DBNAME TABLE`.

Speaks PostgreSQL's protocol itself, to stop at an exact point no driver can be made to stop at:
in a transaction holding a row lock (as a projection batch holds its position row), it sends a
whole Parse and half a Bind — what libpq has on the wire when a big statement (a batch insert
over arrays, an executemany) is cut off between two of its writes. Between Parse and Sync the
server arms no idle-in-transaction timeout: it waits for the rest of the Bind, lock held, for as
long as the connection lives. Then this process waits to be killed with its host.
"""

import socket
import struct
import sys
import time


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def text(value: str) -> bytes:
    return value.encode() + b"\0"


def until_ready(sock: socket.socket) -> None:
    """Read messages up to ReadyForQuery; an ErrorResponse ends this client."""
    buffer = b""
    while True:
        while len(buffer) < 5 or len(buffer) < 1 + struct.unpack("!I", buffer[1:5])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                sys.exit("connection closed")
            buffer += chunk
        kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
        body, buffer = buffer[5 : 1 + length], buffer[1 + length :]
        if kind == b"E":
            sys.exit(f"error: {body!r}")
        if kind == b"Z":
            return


def main(host: str, port: int, dbname: str, table: str) -> None:
    sock = socket.create_connection((host, port))
    startup = b"".join(
        text(v) for v in ("user", "postgres", "database", dbname, "application_name", "half")
    )
    body = struct.pack("!I", 196608) + startup + b"\0"  # protocol 3.0
    sock.sendall(struct.pack("!I", len(body) + 4) + body)
    until_ready(sock)
    for statement in (
        "BEGIN",
        "SET LOCAL idle_in_transaction_session_timeout = '5s'",  # as projection batches do
        f"SELECT * FROM {table} WHERE id = 1 FOR UPDATE",
    ):
        sock.sendall(message(b"Q", text(statement)))
        until_ready(sock)
    parse = message(b"P", text("") + text("SELECT $1::text") + struct.pack("!H", 0))
    sock.sendall(parse + b"B" + struct.pack("!I", 65536) + b"\0\0")  # a Bind's first bytes
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
