"""Databases of a PostgreSQL server, for the tools that make their own (the demo, the chaos run,
the benchmarks): create one, optionally replacing an old one, and get its URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from fulfillment.domain.errors import StoreError


def database_url(server_url: str, name: str) -> str:
    """`server_url` with its database replaced by `name`."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def create_database(server_url: str, name: str, *, replace: bool = False) -> str:
    """Create database `name` on the server of `server_url` and return its URL. With
    `replace`, an existing database of that name is dropped first, its sessions ended."""
    ident = sql.Identifier(name)
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
            if replace:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    except psycopg.Error as exc:
        raise StoreError(f"cannot create database {name!r}: {exc}") from exc
    return database_url(server_url, name)
