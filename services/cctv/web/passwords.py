"""``cctv hash-password``: make the ``user:<hash>`` line of a viewer account."""

from __future__ import annotations

import getpass
import sys

from werkzeug.security import generate_password_hash

from cctv.web.settings import VIEWER_NAME_RE

MIN_LENGTH = 8


def make_account_line(user: str, password: str) -> str:
    """``user:<scrypt hash>`` as ``CCTV_VIEWERS`` expects it."""
    return f"{user}:{generate_password_hash(password, method='scrypt')}"


def hash_password_command(user: str, from_stdin: bool) -> int:
    """Ask for (or read) a password and print the account line; exit code 0, or 2 on bad input."""
    if not VIEWER_NAME_RE.fullmatch(user):
        print(f"cctv hash-password: user name must match {VIEWER_NAME_RE.pattern}",
              file=sys.stderr)
        return 2
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            print("cctv hash-password: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < MIN_LENGTH:
        print(f"cctv hash-password: use at least {MIN_LENGTH} characters", file=sys.stderr)
        return 2
    print(make_account_line(user, password))
    return 0
