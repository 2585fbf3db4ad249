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
}
