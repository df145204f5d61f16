#!/usr/bin/env python3
"""A real SMTP server for urpnet's tests, demo and benchmarks (Debian:
python3-aiosmtpd).

Accepts every message on 127.0.0.1:PORT and writes each one, as received
(headers and body, after X-Envelope-To and X-Accepted-Ms lines), to
DIR/<n>.eml; refuses with 550 any recipient whose
address contains "rifiuta" (to test a refused recipient). Prints "ready" on
stdout once it listens.

    python3 smtp_sink.py PORT DIR
"""
import asyncio
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "rifiuta" in address:
            return "550 5.1.1 recipient refused"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.directory, "%06d.eml" % self.count)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(("X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos)).encode())
            f.write(("X-Accepted-Ms: %d\r\n" % int(time.time() * 1000)).encode())
            data = envelope.original_content or envelope.content
            f.write(data if isinstance(data, bytes) else data.encode())
        os.rename(tmp, path)
        return "250 Message accepted for delivery"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
