#!/bin/sh
# Makes a self-signed certificate for Citadel proxy's nginx, for internal use.
#
# Usage: make-cert.sh [NAME ...]
#   NAME: host names and IP addresses the certificate is valid for
#         (default: this host's name, localhost, 127.0.0.1). The first one is the subject's CN.
# Environment:
#   CITADEL_CERT  certificate path  (default /etc/ssl/certs/citadel-proxy.crt, as in citadel-proxy.conf)
#   CITADEL_KEY   private key path  (default /etc/ssl/private/citadel-proxy.key)
#   CITADEL_CERT_DAYS  validity     (default 825)
#   FORCE=1       replace existing files (otherwise they are kept and the script fails)
#
# Clients trust it by pinning the certificate itself, e.g. `curl --cacert citadel-proxy.crt` or
# SSL_CERT_FILE / REQUESTS_CA_BUNDLE for Python clients.
set -eu

cert=${CITADEL_CERT:-/etc/ssl/certs/citadel-proxy.crt}
key=${CITADEL_KEY:-/etc/ssl/private/citadel-proxy.key}
days=${CITADEL_CERT_DAYS:-825}

if [ "$#" -eq 0 ]; then
    set -- "$(hostname)" localhost 127.0.0.1
fi

if [ "${FORCE:-0}" != 1 ] && { [ -e "$cert" ] || [ -e "$key" ]; }; then
    echo "make-cert.sh: $cert or $key exists; set FORCE=1 to replace it" >&2
    exit 1
fi

san=
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) case "$name" in *:*) entry="IP:$name" ;; *) entry="DNS:$name" ;; esac ;;
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
umask 077
openssl req -x509 -new -nodes -sha256 -days "$days" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -subj "/O=Citadel/CN=$1" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$key" -out "$cert"
chmod 600 "$key"
chmod 644 "$cert"
echo "make-cert.sh: wrote $cert and $key for $san (valid $days days)"
