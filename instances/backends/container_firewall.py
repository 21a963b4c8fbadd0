"""The container backend's egress firewall, as an OCI hook: podman's runtime runs this file (`createRuntime` stage)
for every start of a container annotated `cloudctl.egress`, after its network namespace exists and before anything
runs in it. It loads the rules into that namespace; if they cannot be loaded it exits non-zero and the container
does not start. Standalone (the standard library only): the runtime runs it as a program, with the container's
state as JSON on stdin.
"""

import json
import subprocess
import sys

# The (address, port) pairs the container may reach, space-separated (podman splits an option's value at commas):
# `10.0.2.2:8000 10.0.2.2:8333`.
ANNOTATION = "cloudctl.egress"
SLIRP_DNS = "10.0.2.3"
# What is refused beyond the pairs: the host (slirp4netns's 10.0.2.2 is its loopback) and every private, shared and
# link-local range (other hosts of the operator's network, cloud metadata services).
BLOCKED_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
                    "127.0.0.0/8", "0.0.0.0/8")


def annotation(allowed: list[tuple[str, int]]) -> str:
    return " ".join(f"{address}:{port}" for address, port in allowed)


def allowed_from(value: str) -> list[tuple[str, int]]:
    pairs = []
    for pair in value.split():
        address, port = pair.rsplit(":", 1)
        pairs.append((address, int(port)))
    return pairs


def egress_rules(allowed: list[tuple[str, int]]) -> str:
    """iptables-restore input: its own loopback, replies, DNS through slirp4netns, the allowed pairs; nothing else
    of the host or of any private or link-local network."""
    rules = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             "-A OUTPUT -o lo -j ACCEPT",
             "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             f"-A OUTPUT -d {SLIRP_DNS}/32 -p udp --dport 53 -j ACCEPT",
             f"-A OUTPUT -d {SLIRP_DNS}/32 -p tcp --dport 53 -j ACCEPT"]
    rules += [f"-A OUTPUT -d {address}/32 -p tcp --dport {port} -j ACCEPT" for address, port in allowed]
    rules += [f"-A OUTPUT -d {network} -j REJECT" for network in BLOCKED_NETWORKS]
    return "\n".join([*rules, "COMMIT", ""])


def main() -> int:
    state = json.load(sys.stdin)
    rules = egress_rules(allowed_from(state["annotations"][ANNOTATION]))
    loaded = subprocess.run(["nsenter", f"--net=/proc/{state['pid']}/ns/net", "iptables-restore"], input=rules,
                            capture_output=True, text=True, timeout=30)
    if loaded.returncode != 0:
        sys.stderr.write(f"the container's firewall could not be set, not starting it: {loaded.stderr.strip()}\n")
    return loaded.returncode


if __name__ == "__main__":
    sys.exit(main())
