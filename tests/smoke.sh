#!/bin/sh
# Smoke test of a running vigil with curl: tests/smoke.sh BASE_URL USER PASS
#
#   tests/smoke.sh http://raspberrypi.local:8080 alice 'her password'
#
# Checks: 401 without credentials, login, /api/me, a static file, 304 with
# If-None-Match, a traversal attempt refused. Stops at the first failure with
# a message saying what failed, and exits non-zero; prints "smoke: ok" at the end.
set -u

if [ $# -ne 3 ]; then
    echo "usage: $0 BASE_URL USER PASS" >&2
    exit 2
fi
BASE=${1%/}
USER_NAME=$2
PASS=$3

command -v curl >/dev/null 2>&1 || { echo "smoke: FAIL: curl is not installed" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vigil-smoke.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT INT TERM
# credentials go to curl through a config file, not the command line (ps)
printf 'user = "%s:%s"\n' "$(printf %s "$USER_NAME" | sed 's/[\\"]/\\&/g')" \
    "$(printf %s "$PASS" | sed 's/[\\"]/\\&/g')" >"$WORK/auth"
chmod 600 "$WORK/auth"

fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
}

# fetch NAME PATH [curl args...]: body in $WORK/NAME.body, headers in $WORK/NAME.head,
# status code in $STATUS
fetch() {
    name=$1 path=$2
    shift 2
    STATUS=$(curl -sS --max-time 10 -o "$WORK/$name.body" -D "$WORK/$name.head" \
        -w '%{http_code}' "$@" "$BASE$path") || fail "$name: cannot reach $BASE$path"
}

# header NAME FIELD: the value of header FIELD in response NAME (case-insensitive)
header() {
    tr -d '\r' <"$WORK/$1.head" | awk -v f="$2" '
        BEGIN { f = tolower(f) ":" }
        tolower(substr($0, 1, length(f))) == f { v = substr($0, length(f) + 1); sub(/^[ \t]+/, "", v) }
        END { print v }'
}

expect_status() {
    [ "$STATUS" = "$2" ] \
        || fail "$1: expected HTTP $2, got $STATUS ($(dd bs=200 count=1 <"$WORK/$1.body" 2>/dev/null))"
}

fetch no-credentials /api/me
expect_status no-credentials 401
header no-credentials WWW-Authenticate | grep -qi '^Basic realm=' \
    || fail "no-credentials: 401 without a 'WWW-Authenticate: Basic' challenge"
echo "smoke: 401 without credentials"

fetch login / -K "$WORK/auth"
expect_status login 200
header login Content-Type | grep -qi '^text/html' || fail "login: / is not HTML"
echo "smoke: logged in as $USER_NAME"

fetch me /api/me -K "$WORK/auth"
expect_status me 200
grep -q "\"user\":[[:space:]]*\"$USER_NAME\"" "$WORK/me.body" \
    || fail "me: /api/me does not name $USER_NAME: $(cat "$WORK/me.body")"
header me Cache-Control | grep -qi 'no-store' || fail "me: /api/me without Cache-Control: no-store"
echo "smoke: /api/me says $(cat "$WORK/me.body")"

fetch static /index.html -K "$WORK/auth"
expect_status static 200
[ -s "$WORK/static.body" ] || fail "static: /index.html is empty"
ETAG=$(header static ETag)
[ -n "$ETAG" ] || fail "static: /index.html has no ETag"
echo "smoke: /index.html ($(wc -c <"$WORK/static.body" | tr -d ' ') bytes, ETag $ETAG)"

fetch cached /index.html -K "$WORK/auth" -H "If-None-Match: $ETAG"
expect_status cached 304
[ ! -s "$WORK/cached.body" ] || fail "cached: a 304 with a body"
echo "smoke: 304 with If-None-Match"

for path in /../../../../etc/passwd /%2e%2e/%2e%2e/%2e%2e/etc/passwd /..%2f..%2fetc%2fpasswd; do
    fetch traversal "$path" -K "$WORK/auth" --path-as-is
    case $STATUS in
    400 | 403 | 404) ;;
    *) fail "traversal: $path answered HTTP $STATUS" ;;
    esac
    if grep -q 'root:' "$WORK/traversal.body"; then
        fail "traversal: $path served /etc/passwd"
    fi
done
echo "smoke: traversal attempts refused"

echo "smoke: ok"
