"""Join the Ray cluster a sweep runs on (or start a local one), failing in seconds and in one line.

`ray.init(address=...)` retries an unreachable head for minutes and reports a refused token as a
traceback; a researcher who mistyped --address, or forgot the token, deserves a sentence instead.
"""

from __future__ import annotations

import os
import socket

from raydiff.errors import UserError

TOKEN_HINT = (
    "set RAY_AUTH_MODE=token and give this client the cluster's token "
    "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; `ray get-auth-token` on the head prints it)"
)


def gcs_endpoint(address: str | None) -> tuple[str, int] | None:
    """(host, port) of a head's GCS given as host:port; None for "auto", "local", ray://… or none."""
    if not address or address in ("auto", "local"):
        return None
    scheme, sep, rest = address.rpartition("://")
    host, _, port = (rest if sep else address).rpartition(":")
    ok = scheme in ("", "ray") and (scheme or not sep) and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536
    if not ok or any(c.isspace() or c in "/?#@" for c in host):
        raise UserError(
            f"--address must be the head's host:port (e.g. 10.0.0.5:6379, port 1-65535), 'auto' or ray://host:port (got {address!r})"
        )
    return None if sep else (host.strip("[]"), int(port))


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    endpoint = gcs_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as e:
        raise UserError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); "
            "check --address / RAY_ADDRESS, or start one (`ray up cluster/aws.yaml`, `ray start --head`)"
        ) from None


def check_token(address: str | None) -> None:
    """One GCS handshake (about a second) to tell a refused token apart from everything else,
    which `ray.init` would only report after a minute of retries as "failed to connect"."""
    if gcs_endpoint(address) is None:
        return
    from ray.exceptions import AuthenticationError

    try:
        from ray._raylet import GcsClient  # private: if it moves, ray.init reports the failure

        GcsClient(address=address)
    except AuthenticationError as e:
        raise UserError(f"the Ray cluster at {address} refused this client ({_reason(e)}); {TOKEN_HINT}") from None
    except Exception:  # noqa: BLE001 - anything else is ray.init's to report
        pass


def connect(address: str | None):
    """ray.init on the cluster at `address` (default $RAY_ADDRESS; none: a new local Ray whose
    dashboard listens on 127.0.0.1 only). Returns Ray's context."""
    import ray
    from ray.exceptions import AuthenticationError

    address = address or os.environ.get("RAY_ADDRESS")
    check_reachable(address)
    check_token(address)
    try:
        return ray.init(
            address=address,
            include_dashboard=True,
            dashboard_host="127.0.0.1",  # ignored when joining: the head's own setting holds
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
    except AuthenticationError as e:
        raise UserError(f"the Ray cluster at {address} refused this client ({_reason(e)}); {TOKEN_HINT}") from None
    except ConnectionError as e:
        raise UserError(f"cannot join the Ray cluster at {address}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """The first sentence of an exception's text (Ray appends paragraphs of advice; ours follows)."""
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(e).__name__
