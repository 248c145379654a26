"""A TCP forwarder for the multi-host tests:
`forward.py TARGET_HOST:PORT LISTEN_PORT IDLE,INTERVAL,COUNT ADDR...`.

Listens on each ADDR (our side of a test host's veth link) and pipes every connection to the
target (PostgreSQL on 127.0.0.1), so the shared server needs no reconfiguring. Prints "ready"
once listening. A connection whose far side vanished without a word stays open here, as it
would in a real network (that is what the leadership lease is tested against), until the
keepalive probes on its host-facing socket go unanswered (IDLE seconds idle, then COUNT probes
INTERVAL apart): then its PostgreSQL connection is closed. PostgreSQL's backends would probe
the host so themselves (lowrouter asks them to) if they faced it rather than this forwarder.
"""

import asyncio
import socket
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(target: str, port: int, keepalive: str, addresses: list[str]) -> None:
    host, target_port = target.rsplit(":", 1)
    idle, interval, count = (int(n) for n in keepalive.split(","))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    servers = [await asyncio.start_server(handle, address, port) for address in addresses]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]))
