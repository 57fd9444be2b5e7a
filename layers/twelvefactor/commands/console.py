"""``twelvefactor console``: threads in a browser: list, timeline, exact requests, approve, launch.

    twelvefactor console [--api-url URL] [--port 8080] [--host 127.0.0.1]

The API's base URL comes from ``--api-url`` or ``TWELVEFACTOR_API_URL`` (``twelvefactor local up``
starts a console of its own and prints its URL). For a deployed stack (an ``execute-api`` URL) each
request is signed with your own AWS credentials (SigV4, as the AWS CLI signs), so nothing is deployed
for the console and the API keeps its one way in. It listens on loopback unless ``--host`` says
otherwise. A decision's exact request is rendered from this checkout's agents and prompts, as
``twelvefactor prompt render`` does.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from twelvefactor import application
from twelvefactor.commands.threads import ThreadsApi
from twelvefactor.console.server import LOOPBACK, Console, is_loopback, serve
from twelvefactor.console.sigv4 import NoCredentials, SigV4, is_aws_url, region_of
from twelvefactor.settings import CliSettings, LlmSettings, OutputMode

EXIT_FAILED = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--api-url", help="the API's base URL (default: $TWELVEFACTOR_API_URL)")
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on (default: 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any)")
    parser.add_argument(
        "--sign",
        choices=["auto", "sigv4", "none"],
        default="auto",
        help="sign requests with your AWS credentials (auto: for an amazonaws.com URL)",
    )
    parser.add_argument("--region", help="the API's region for SigV4 (default: from the URL)")
    parser.add_argument("--mode", choices=get_args(OutputMode), help="output mode of exact requests")
    parser.add_argument("--prompts-dir", type=Path, help="templates for exact requests")
    parser.set_defaults(run=run)


def build(
    api_url: str,
    *,
    sign: str = "auto",
    region: str | None = None,
    mode: OutputMode | None = None,
    prompts_dir: Path | None = None,
) -> Console:
    """A console for this API; raises NoCredentials or ValueError with a message for a person."""
    auth = None
    if sign == "sigv4" or (sign == "auto" and is_aws_url(api_url)):
        found_region = region or region_of(api_url)
        if found_region is None:
            raise ValueError(f"cannot tell the region of {api_url}: pass --region")
        auth = SigV4(api_url, found_region)
    app = application.load()
    return Console(
        ThreadsApi(api_url, auth=auth),
        app.build_registry(),
        prompts_dir or app.prompts_dir,
        mode or LlmSettings().output_mode,
        api_label=f"{api_url} (SigV4)" if auth else api_url,
    )


def run(args: argparse.Namespace) -> int:
    api_url = args.api_url or CliSettings().api_url
    if not api_url:
        print(
            "twelvefactor console: no API URL: pass --api-url or set TWELVEFACTOR_API_URL "
            "(`twelvefactor local up` starts a console itself)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        console = build(
            api_url, sign=args.sign, region=args.region, mode=args.mode, prompts_dir=args.prompts_dir
        )
    except (NoCredentials, ValueError) as error:
        print(f"twelvefactor console: {error}", file=sys.stderr)
        return EXIT_FAILED
    if not is_loopback(args.host):
        print(
            f"twelvefactor console: listening on {args.host}: anyone who reaches it acts with "
            "this console's API access",
            file=sys.stderr,
        )
    try:
        with serve(console, args.host, args.port) as url:
            print(f"twelvefactor console for {console.api_label}: {url}  (Ctrl-C stops it)", flush=True)
            threading.Event().wait()
    except OSError as error:
        print(f"twelvefactor console: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    finally:
        console.api.close()
    return 0


@contextmanager
def local_console(api_url: str, mode: OutputMode, port: int = 0) -> Iterator[str]:
    """A console for the local stack's gateway (unsigned, as the gateway takes it), on loopback."""
    console = build(api_url, sign="none", mode=mode)
    try:
        with serve(console, LOOPBACK, port) as url:
            yield url
    finally:
        console.api.close()
