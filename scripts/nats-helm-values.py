#!/usr/bin/env python3
"""Generates deploy/kubernetes/nats/values.yaml, the values of the official `nats` Helm chart
(nats-io/k8s, chart 1.x) for this product, from nats/server.conf: the users and permissions (and
the payload and JetStream memory limits) are read from the file the local stack and the tests run,
so the cluster cannot drift from them. Passwords stay variables ($NATS_<USER>_PASSWORD), filled by
nats-server from its environment, which the chart takes from the Secret `marketplace-nats`.

    scripts/nats-helm-values.py            # rewrite the values file
    scripts/nats-helm-values.py --check    # exit 1 when it is not what server.conf gives (CI)

Python's standard library only: a small reader of the NATS configuration format (maps, arrays,
`key: value` / `key = value` / `key value`, comments, quoted and bare strings, includes)."""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "nats", "server.conf")
TARGET = os.path.join(ROOT, "deploy", "kubernetes", "nats", "values.yaml")
SECRET = "marketplace-nats"


class Var(str):
    """A `$NAME` reference, resolved by nats-server from its environment."""


class Raw(str):
    """A bare value the chart must write unquoted (sizes such as 1MB)."""


def tokens(text):
    pattern = re.compile(
        r"""(?P<comment>(\#|//)[^\n]*)|(?P<newline>\n)|(?P<space>[ \t\r]+)
          |(?P<punct>[{}\[\]:=,;])|(?P<dquote>"(?:[^"\\]|\\.)*")|(?P<squote>'[^']*')
          |(?P<bare>[^\s{}\[\],;:=#"']+(?::[^\s{}\[\],;=#"']+)*)""",
        re.X,
    )
    position = 0
    while position < len(text):
        match = pattern.match(text, position)
        if not match:
            raise SystemExit(f"{SOURCE}: cannot read at offset {position}: {text[position:position + 20]!r}")
        position = match.end()
        kind = match.lastgroup
        if kind in ("comment", "space"):
            continue
        value = match.group(kind)
        if kind == "dquote":
            yield ("str", json.loads(value))
        elif kind == "squote":
            yield ("str", value[1:-1])
        else:
            yield (kind, value)
    yield ("end", None)


class Reader:
    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as file:
            self.tokens = list(tokens(file.read()))
        self.index = 0

    def peek(self):
        return self.tokens[self.index]

    def take(self):
        token = self.tokens[self.index]
        self.index += 1
        return token

    def skip_separators(self):
        while self.peek()[0] == "newline" or self.peek() in (("punct", ","), ("punct", ";")):
            self.take()

    def map_body(self, closing):
        result = {}
        while True:
            self.skip_separators()
            kind, value = self.take()
            if (kind, value) == closing or (kind == "end" and closing == ("end", None)):
                return result
            if kind not in ("bare", "str"):
                raise SystemExit(f"{self.path}: expected a key, got {value!r}")
            key = value
            if key == "include" and kind == "bare":
                _, name = self.take()
                included = Reader(os.path.join(os.path.dirname(self.path), name)).map_body(("end", None))
                result.update(included)
                continue
            if self.peek() in (("punct", ":"), ("punct", "=")):
                self.take()
            result[key] = self.value()

    def value(self):
        kind, value = self.take()
        if (kind, value) == ("punct", "{"):
            return self.map_body(("punct", "}"))
        if (kind, value) == ("punct", "["):
            items = []
            while True:
                self.skip_separators()
                if self.peek() == ("punct", "]"):
                    self.take()
                    return items
                items.append(self.value())
        if kind == "str":
            return value
        if kind == "bare":
            if value.startswith("$"):
                return Var(value)
            if re.fullmatch(r"-?\d+", value):
                return int(value)
            if value in ("true", "false"):
                return value == "true"
            if re.fullmatch(r"\d+(\.\d+)?[A-Za-z]+", value):
                return Raw(value)
            return value
        raise SystemExit(f"{self.path}: unexpected {value!r}")


def for_chart(value):
    """The chart's `merge` rules: strings in << >> are written unquoted (variables, sizes)."""
    if isinstance(value, dict):
        return {key: for_chart(item) for key, item in value.items()}
    if isinstance(value, list):
        return [for_chart(item) for item in value]
    if isinstance(value, (Var, Raw)):
        return f"<< {value} >>"
    return value


def yaml(value, indent=0):
    """A small YAML writer (block style, JSON-quoted strings): no dependency for CI."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {scalar(item)}")
    return "\n".join(lines)


def scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    return json.dumps(value)


def users_env(authorization):
    """container.env: every $NATS_..._PASSWORD the users refer to, from the Secret."""
    names = sorted(
        {user["password"][1:] for user in authorization.get("users", []) if isinstance(user.get("password"), Var)}
    )
    return {name: {"valueFrom": {"secretKeyRef": {"name": SECRET, "key": name}}} for name in names}


def values():
    conf = Reader(SOURCE).map_body(("end", None))
    authorization = conf["authorization"]
    jetstream = conf.get("jetstream", {})
    merge = {}
    if "max_payload" in conf:
        merge["max_payload"] = conf["max_payload"]
    # Lame duck: on a rolling update a node stops taking clients and hands them to the others over
    # 30 s (clients reconnect to another node; JetStream leaders move first).
    merge["lame_duck_grace_period"] = Raw("10s")
    merge["lame_duck_duration"] = Raw("30s")
    merge["authorization"] = authorization
    return {
        "config": {
            "cluster": {"enabled": True, "replicas": 3},
            "jetstream": {
                "enabled": True,
                # INBOUND (2 GiB) + DEAD_LETTER (1 GiB) + the file KV bucket, with room to spare
                "fileStore": {"enabled": True, "pvc": {"enabled": True, "size": "10Gi"}},
                # the memory KV buckets (typing, leases, heartbeats)
                "memoryStore": {"enabled": True, "maxSize": str(jetstream.get("max_memory_store", "256MB"))},
            },
            "monitor": {"enabled": True},
            "merge": for_chart(merge),
        },
        "container": {
            "env": users_env(authorization),
            # README "Benchmarks": nats-server 57-234 us of CPU per chat message (about half a
            # core at 5,000 msg/s on one node; each of three replicas writes every frame).
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
        "podTemplate": {
            "topologySpreadConstraints": {
                "kubernetes.io/hostname": {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"},
                "topology.kubernetes.io/zone": {"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"},
            }
        },
        # the chart's default: maxUnavailable 1 of the three nodes
        "podDisruptionBudget": {"enabled": True},
        # nats_* and jetstream_* metrics (INBOUND backlog, DEAD_LETTER) for deploy/monitoring
        "promExporter": {"enabled": True, "podMonitor": {"enabled": False}},
        # `kubectl exec -it deploy/nats-box -- nats consumer report INBOUND`: read-only as `trace`
        "natsBox": {
            "enabled": True,
            "container": {
                "env": {
                    "NATS_TRACE_PASSWORD": {"valueFrom": {"secretKeyRef": {"name": SECRET, "key": "NATS_TRACE_PASSWORD"}}},
                    "NATS_URL": "nats://trace:$(NATS_TRACE_PASSWORD)@nats:4222",
                }
            },
        },
    }


HEADER = """# GENERATED by scripts/nats-helm-values.py from nats/server.conf: do not edit by hand (CI checks
# it is current). Values of the official `nats` Helm chart (1.x) for a 3-node JetStream cluster
# with this product's users and permissions; passwords come from the Secret marketplace-nats.
#
#   helm repo add nats https://nats-io.github.io/k8s/helm/charts/
#   helm install nats nats/nats --namespace marketplace -f deploy/kubernetes/nats/values.yaml
"""


def main():
    text = HEADER + yaml(values()) + "\n"
    if sys.argv[1:] == ["--check"]:
        try:
            with open(TARGET, encoding="utf-8") as file:
                current = file.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{os.path.relpath(TARGET, ROOT)} is not what nats/server.conf gives: run scripts/nats-helm-values.py", file=sys.stderr)
            sys.exit(1)
        print(f"{os.path.relpath(TARGET, ROOT)} is current")
        return
    os.makedirs(os.path.dirname(TARGET), exist_ok=True)
    with open(TARGET, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {os.path.relpath(TARGET, ROOT)}")


if __name__ == "__main__":
    main()
