"""Runs ON the box under test (sent by the host tests): finds the API token, calls the app through nginx.

usage: python3 -c "$(cat box_client.py)" METHOD PATH [BODY_JSON] [--plain] [--no-token]
       (prints {"status", "headers", "body"}), or ... --print-token
       --body-bytes=N sends a JSON body of N bytes; --stream=FILE writes the answer's body to FILE line by line
       as it arrives (for event streams), and prints {"status", "headers"} at its end.

The token is found where the service finds it: SERVER_RESPONDER_API_KEY(_FILE) in the boot-time env file,
then api_key(_file) in config.toml, then the generated <data_dir>/api_token. HTTPS is verified against the
box's own certificate for the name localhost; --plain asks port 80 and follows no redirect.
"""

import http.client
import json
import ssl
import sys
import tomllib
from pathlib import Path

CONFIG = Path("/etc/server-responder/config.toml")
ENV_FILE = Path("/etc/server-responder/env")
CERTIFICATE = "/etc/nginx/tls/server.crt"


def env_file() -> dict:
    values = {}
    if ENV_FILE.is_file():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                name, value = line.split("=", 1)
                values[name.strip()] = value.strip().strip("\"'")
    return values


def api_token() -> str:
    env = env_file()
    config = tomllib.loads(CONFIG.read_text())
    if env.get("SERVER_RESPONDER_API_KEY"):
        return env["SERVER_RESPONDER_API_KEY"]
    if env.get("SERVER_RESPONDER_API_KEY_FILE"):
        return Path(env["SERVER_RESPONDER_API_KEY_FILE"]).read_text().strip()
    if config.get("api_key"):
        return config["api_key"]
    if config.get("api_key_file"):
        return Path(config["api_key_file"]).read_text().strip()
    data_dir = Path(env.get("SERVER_RESPONDER_DATA_DIR") or config.get("data_dir") or "/var/lib/server-responder")
    return (data_dir / "api_token").read_text().strip()


def main(argv: list) -> int:
    flags = {arg.split("=", 1)[0]: arg.partition("=")[2] for arg in argv if arg.startswith("--")}
    if "--print-token" in flags:
        print(api_token())
        return 0
    method, path, *rest = [arg for arg in argv if not arg.startswith("--")]
    body = rest[0] if rest else None
    if "--body-bytes" in flags:
        filler = int(flags["--body-bytes"]) - len('{"filler": ""}')
        body = json.dumps({"filler": "x" * filler})
    headers = {"Content-Type": "application/json"} if body else {}
    if "--no-token" not in flags:
        headers["Authorization"] = "Bearer " + api_token()
    if "--plain" in flags:
        connection = http.client.HTTPConnection("localhost", 80, timeout=60)
    else:
        context = ssl.create_default_context(cafile=CERTIFICATE)
        connection = http.client.HTTPSConnection("localhost", 443, context=context, timeout=60)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    if "--stream" in flags:
        with open(flags["--stream"], "wb", buffering=0) as stream:
            for line in response:
                stream.write(line)
        print(json.dumps({"status": response.status, "headers": dict(response.getheaders())}))
        return 0
    data = response.read().decode("utf-8", "replace")
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data
    print(json.dumps({"status": response.status, "headers": dict(response.getheaders()), "body": parsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
