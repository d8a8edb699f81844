"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives, for the notification tests.

Listens on 127.0.0.1 (port 0 = any free one), prints the port on the first line of stdout, and writes every message
it accepts to MAILDIR/N.eml plus MAILDIR/N.json (envelope sender and recipients, whether the session was encrypted,
the login used, and the headers and text body decoded by Python's email package), each moved into place whole. --starttls offers and requires STARTTLS, --smtps speaks TLS from the
first byte, --user/--password require that login (only over TLS, as aiosmtpd insists).
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import json
import logging
import os
import ssl
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd warns (by log and by warning) about its own use of login_data and about AUTH without STARTTLS, which is
# what SMTPS is; neither says anything about the agent.
logging.getLogger("mail.log").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class Keep:
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": server.transport.get_extra_info("cipher") is not None,
            "login": session.auth_data.login.decode() if session.auth_data else None,
            "headers": {name.lower(): str(value) for name, value in message.items()},
            "body": message.get_content(),
        }
        for suffix, data in ((".eml", envelope.original_content), (".json", json.dumps(meta).encode())):
            path = os.path.join(self.maildir, f"{n}{suffix}")
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--smtps", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == (
            args.user,
            args.password,
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    starttls = tls_context(*args.starttls) if args.starttls else None
    smtps = tls_context(*args.smtps) if args.smtps else None
    handler = Keep(args.maildir)

    def factory():
        return SMTP(
            handler,
            hostname="smtp-sink.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=authenticator if args.user else None,
            auth_required=args.user is not None,
            # aiosmtpd only knows about TLS it started itself (STARTTLS); SMTPS is TLS from the first byte.
            auth_require_tls=smtps is None,
        )

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", args.port, ssl=smtps)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
